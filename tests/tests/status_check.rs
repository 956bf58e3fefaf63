//! `linkage status --check`, the real CLI against a real hub and node: exit code 0 while the
//! district has converged, 3 once a node is offline (the view printed either way), 1 when the
//! hub does not answer.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::ensure;
use linkage_tests::scenario::HAIBIN;
use linkage_tests::{HubProcess, NodeProcess, bin, eventually};

/// `linkage --hub URL status --check`: its exit code and what it printed.
async fn status_check(hub_url: &str) -> anyhow::Result<(Option<i32>, String)> {
    let output = tokio::process::Command::new(bin("linkage")?)
        .args(["--hub", hub_url, "status", "--check"])
        .output()
        .await?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Waits until `status --check` exits with `code`; returns what it printed then.
async fn until_exit_code(hub_url: &str, code: i32, what: &str) -> anyhow::Result<String> {
    eventually(what, Duration::from_secs(60), || async move {
        let (exited, shown) = status_check(hub_url).await?;
        Ok((exited == Some(code)).then_some(shown))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_exits_3_while_the_district_has_not_converged() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("linkage-status-")
        .tempdir()?;
    let mut hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
    let url = hub.url();
    let mut haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&url))?;

    let shown = until_exit_code(&url, 0, "the district to converge (exit code 0)").await?;
    ensure!(
        shown.contains(HAIBIN),
        "the node is not in the view:\n{shown}"
    );

    haibin.proc.kill9();
    let shown = until_exit_code(&url, 3, "exit code 3 with the node offline").await?;
    ensure!(
        shown.contains(HAIBIN),
        "the view is printed when not converged:\n{shown}"
    );

    hub.proc.kill9();
    let (exited, _) = status_check(&url).await?;
    ensure!(
        exited == Some(1),
        "a hub that does not answer: exit code {exited:?}, not 1"
    );
    Ok(())
}
