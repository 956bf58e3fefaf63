//! The benchmark harness at tiny sizes, so it cannot rot: every workload must run to the end
//! on real hub and node processes and report a number for each of its figures. No timing is
//! asserted (issue "Speed and scale": the numbers are for people), and the peers are not run
//! (they install from npm and build with cargo on first use).

use std::time::Duration;

use linkage_tests::bench::{self, Plan, Progress, Sizes, Unit, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_completes_and_reports_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        sizes: Sizes::tiny(),
        workloads: Workload::ALL.to_vec(),
        peers: false,
        peers_dir: Plan::default_peers_dir(),
        peer_timeout: Duration::from_secs(1),
        root: dir.path().to_owned(),
    };
    let report = bench::run(&plan, &Progress::quiet()).await;

    assert!(report.complete(), "failed workloads: {:?}", report.failures);
    for workload in ["district", "reconnect", "cold start", "limits", "scale"] {
        assert!(
            report.figures.iter().any(|f| f.workload == workload),
            "no figure from {workload}"
        );
    }
    for figure in &report.figures {
        let value = figure.value.unwrap_or_else(|| {
            panic!(
                "{} / {} has no value: {:?}",
                figure.workload, figure.name, figure.note
            )
        });
        assert!(
            value.is_finite() && value >= 0.0,
            "{} / {} = {value}",
            figure.workload,
            figure.name
        );
        if matches!(figure.unit, Unit::PerSecond) {
            assert!(value > 0.0, "{} measured no work", figure.name);
        }
    }
    let table = report.table();
    assert!(table.contains("Linkage / peer"), "{table}");
}
