//! `District.ForgetNode`: the operator retires an offline node (one started again on an empty
//! data folder is a new node, and its old entry would keep the district "not converged"
//! forever). Only an offline node, named by its id or an unambiguous start of it; the node
//! stays gone after the hub restarts.
//!
//! Hand-driven clients stand in for the nodes; the hub runs in-process over real gRPC on
//! loopback port 0 with an in-memory store.

use std::time::Duration;

use linkage_hub::convergence::Registry;
use linkage_proto::v1::ForgetNodeRequest;
use linkage_proto::v1::SyncFrame;
use linkage_proto::v1::district_client::DistrictClient;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

mod common;

use common::{open_session, start_hub};

const HAIBIN: &str = "130304100";

/// Opens a sync session as `node_id` and returns the sender that keeps it open.
async fn connect(url: &str, node_id: &str) -> mpsc::Sender<SyncFrame> {
    let (outbound, mut inbound) = open_session(url, HAIBIN, node_id, node_id).await;
    // Keep reading so the hub's session is not held up by a full stream.
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    outbound
}

async fn wait_connected(registry: &Registry, node_id: &str, connected: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = registry.report().unwrap();
        if report
            .nodes
            .iter()
            .any(|n| n.node_id == node_id && n.connected == connected)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node_id} never became connected={connected}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn forget(
    district: &mut DistrictClient<Channel>,
    node: &str,
) -> Result<String, tonic::Status> {
    district
        .forget_node(ForgetNodeRequest {
            node_id: node.into(),
        })
        .await
        .map(|answer| answer.into_inner().org)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_is_forgotten_by_an_unambiguous_id_and_stays_gone() {
    let hub = start_hub().await;
    let mut district = DistrictClient::connect(hub.url.clone()).await.unwrap();
    let replaced = connect(&hub.url, "aaaa-replaced-folder").await;
    let other = connect(&hub.url, "aaab-other-device").await;
    wait_connected(&hub.registry, "aaaa-replaced-folder", true).await;

    let refused = forget(&mut district, "aaaa-replaced-folder")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("connected"),
        "{}",
        refused.message()
    );

    drop(replaced);
    drop(other);
    wait_connected(&hub.registry, "aaaa-replaced-folder", false).await;
    wait_connected(&hub.registry, "aaab-other-device", false).await;

    let ambiguous = forget(&mut district, "aaa").await.unwrap_err();
    assert_eq!(ambiguous.code(), Code::InvalidArgument);
    for id in ["aaaa-replaced-folder", "aaab-other-device"] {
        assert!(ambiguous.message().contains(id), "{}", ambiguous.message());
    }
    let empty = forget(&mut district, " ").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let unknown = forget(&mut district, "zzz").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("zzz"), "{}", unknown.message());

    assert_eq!(
        forget(&mut district, "AAAA").await.unwrap(),
        HAIBIN,
        "an id given in capitals"
    );
    let ids = |registry: &Registry| -> Vec<String> {
        registry
            .report()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.node_id)
            .collect()
    };
    assert_eq!(ids(&hub.registry), ["aaab-other-device"]);
    // A hub restarted over the same store does not bring it back.
    let reloaded = Registry::load(hub.replica.clone()).unwrap();
    assert_eq!(ids(&reloaded), ["aaab-other-device"]);
}
