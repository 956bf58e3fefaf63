//! The convergence tracker must not call a node converged before it knows: a node that has
//! just connected has not yet said what it recorded while offline, so until its first progress
//! report the hub cannot tell whether it is behind.
//!
//! A hand-driven client stands in for the node, so the moment between hello and the first
//! progress report lasts as long as the test wants instead of a few milliseconds. The hub runs
//! in-process over real gRPC on loopback port 0 with an in-memory store.

use std::time::Duration;

use linkage_hub::convergence::Registry;
use linkage_proto::v1::sync_frame::Frame;
use linkage_proto::v1::{ConvergenceReport, Progress, SyncFrame};

mod common;

use common::{open_session, start_hub};

const HAIBIN: &str = "130304100";

fn progress(pending_records: u64) -> SyncFrame {
    SyncFrame {
        frame: Some(Frame::Progress(Progress {
            pending_records,
            oldest_pending_ms: if pending_records > 0 { 1 } else { 0 },
            last_seq: 7,
            ..Default::default()
        })),
    }
}

async fn report_when(
    registry: &Registry,
    what: &str,
    want: impl Fn(&ConvergenceReport) -> bool,
) -> ConvergenceReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = registry.report().unwrap();
        if want(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last report {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_reported_its_pending_changes_is_not_converged() {
    let hub = start_hub().await;
    let registry = &hub.registry;
    let (outbound, _inbound) =
        open_session(&hub.url, HAIBIN, "returning-node", "returning-store").await;

    // Connected, but the node has said nothing about what it wrote offline.
    let report = registry.report().unwrap();
    let node = &report.nodes[0];
    assert!(node.connected, "{report:?}");
    assert!(
        !report.converged && !node.converged,
        "the hub calls a node converged before its first progress report, so a node \
         returning with offline writes shows converged until it speaks: {report:?}"
    );

    outbound.send(progress(3)).await.unwrap();
    report_when(registry, "the node's backlog to show", |r| {
        r.nodes[0].pending_from_node == 3
    })
    .await;
    assert!(!registry.report().unwrap().converged);

    outbound.send(progress(0)).await.unwrap();
    report_when(registry, "the district to converge", |r| r.converged).await;
}
