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

/// A `--dir` holding an earlier run would hand its stores to the new run's hub and nodes (one
/// rerun into an old folder reported a 10,000-record sync in 334 ms and then timed out). The
/// harness refuses it by name, before starting anything, and leaves what is there alone.
#[test]
fn a_data_folder_holding_an_earlier_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("cold-start");
    std::fs::create_dir(&earlier).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_linkage-bench"))
        .args(["--quick", "--no-peers", "--workloads", "limits", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not empty") && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(earlier.is_dir(), "the earlier run's folder is left alone");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A `--dir` that is a file, or a link to nowhere, is refused up front too (it used to start,
/// fail every workload with an OS error, and say the data was kept there).
#[test]
fn a_data_folder_that_is_a_file_is_refused_before_any_workload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "kept").unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();

    for path in [&file, &dangling] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_linkage-bench"))
            .args(["--quick", "--no-peers", "--workloads", "limits", "--dir"])
            .arg(path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("is not a folder this run can use")
                && !stderr.contains("limits failed"),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
}

/// A size of zero is refused by name before anything starts: `--records 0` and
/// `--scale-clients 0` panicked dividing by it, and `--offices 0` and `--cold-records 0` waited
/// out their timeouts (60 and 240 s) to report nothing.
#[test]
fn a_size_of_zero_is_refused_before_any_workload() {
    for (flag, value) in [
        ("--offices", "0"),
        ("--records", "0"),
        ("--cold-records", "0"),
        ("--scale-clients", "200,0"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_linkage-bench"))
            .args(["--quick", "--no-peers", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("must be at least 1"),
            "{flag} {value}: {stderr}"
        );
    }
}

/// A `--results` file whose folder does not exist is refused before the run, naming it: it
/// used to fail with a bare OS error after the whole run, losing its figures.
#[test]
fn a_results_file_in_a_missing_folder_is_refused_before_any_workload() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("missing").join("out.md");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_linkage-bench"))
        .args([
            "--quick",
            "--no-peers",
            "--workloads",
            "limits",
            "--results",
        ])
        .arg(&results)
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not exist")
            && stderr.contains(&results.display().to_string())
            && !stderr.contains("linkage-bench ("),
        "{stderr}"
    );
}
