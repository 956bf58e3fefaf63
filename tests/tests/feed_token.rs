//! A department's feed token file, end to end on real processes: the CLI keeps the id of the
//! hub's change log beside the token, and a hub rebuilt on a fresh store (its log refilled by
//! the nodes, so the old position is inside it but names other records) refuses the old file
//! instead of skipping records, and says how to start over.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use linkage_proto::v1 as pb;
use linkage_proto::v1::feeds_client::FeedsClient;
use linkage_tests::scenario::{HAIBIN, MARKET};
use linkage_tests::{HubProcess, NodeProcess, bin, channel, eventually};
use serde_json::json;

/// `linkage --hub URL feed --org MARKET --token-file FILE`, the real CLI.
async fn cli_feed(hub: &HubProcess, token_file: &Path) -> anyhow::Result<std::process::Output> {
    Ok(tokio::process::Command::new(bin("linkage")?)
        .args(["--hub", &hub.url(), "feed", "--org", MARKET, "--token-file"])
        .arg(token_file)
        .output()
        .await?)
}

/// [`cli_feed`], which must succeed.
async fn pull_feed(hub: &HubProcess, token_file: &Path) -> anyhow::Result<std::process::Output> {
    let pulled = cli_feed(hub, token_file).await?;
    ensure!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    Ok(pulled)
}

/// Records the hub's feed for the Market Supervision Bureau holds, from the start.
async fn feed_len(hub_url: &str) -> anyhow::Result<usize> {
    let request = pb::FeedRequest {
        org: MARKET.into(),
        catch_up_only: true,
        ..Default::default()
    };
    let mut stream = FeedsClient::new(channel(hub_url).await?)
        .subscribe(request)
        .await?
        .into_inner();
    let mut events = 0;
    while stream.message().await?.is_some() {
        events += 1;
    }
    Ok(events)
}

async fn wait_for_records(hub: &HubProcess, count: usize) -> anyhow::Result<()> {
    let url = hub.url();
    eventually(
        &format!("the hub to hold {count} records"),
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move { Ok((feed_len(&url).await? == count).then_some(())) }
        },
    )
    .await
}

async fn wait_for_three_records(hub: &HubProcess) -> anyhow::Result<()> {
    wait_for_records(hub, 3).await
}

/// Cases `node` opens, shared with `party`.
async fn create_cases(node: &NodeProcess, party: &str, count: usize) -> anyhow::Result<()> {
    let mut records = node.records().await?;
    for i in 0..count {
        records
            .create(pb::CreateRecordRequest {
                kind: "case".into(),
                parties: vec![party.to_owned()],
                body_json: json!({ "title": format!("case {i} for the feed") }).to_string(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Copies a closed RocksDB folder (flat: files only), as a backup would.
fn copy_folder(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// A department that read a hub's feed past the point where a copy of the hub's store was
/// made, the hub killed and the copy kept: what a restore from that copy faces.
struct ReadPastACopy {
    _temp: tempfile::TempDir,
    copy: std::path::PathBuf,
    addr: String,
    token_file: std::path::PathBuf,
    /// Haibin, then the Market Supervision Bureau.
    offices: [NodeProcess; 2],
}

async fn read_past_a_copy() -> anyhow::Result<ReadPastACopy> {
    let temp = tempfile::Builder::new().prefix("linkage-feed-").tempdir()?;
    let (live, copy) = (temp.path().join("hub"), temp.path().join("hub-copy"));
    let mut hub = HubProcess::start(&live, "127.0.0.1:0")?;
    let addr = hub.addr.clone();
    let haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&hub.url()))?;
    let market = NodeProcess::start(MARKET, &temp.path().join("market"), Some(&hub.url()))?;
    create_cases(&haibin, MARKET, 2).await?;
    wait_for_records(&hub, 2).await?;
    hub.proc.kill9();
    copy_folder(&live, &copy)?;

    // After the copy the Market Supervision Bureau opens two cases with Haibin; the hub, as it
    // hands them to Haibin, reports the end of its log, longer than the copy's.
    hub = HubProcess::start(&live, &addr)?;
    create_cases(&market, HAIBIN, 2).await?;
    wait_for_records(&hub, 4).await?;
    let at_haibin = haibin.records().await?;
    eventually(
        "Haibin to hold the four cases",
        Duration::from_secs(60),
        || {
            let mut records = at_haibin.clone();
            async move {
                let held = records
                    .list(pb::ListRecordsRequest::default())
                    .await?
                    .into_inner()
                    .records
                    .len();
                Ok((held == 4).then_some(()))
            }
        },
    )
    .await?;
    let token_file = temp.path().join("token.txt");
    pull_feed(&hub, &token_file).await?;
    hub.proc.kill9();
    Ok(ReadPastACopy {
        _temp: temp,
        copy,
        addr,
        token_file,
        offices: [haibin, market],
    })
}

/// The restored hub holds the four cases again; the department's old token file is refused
/// with the log it names, and starting over delivers all four.
async fn refused_then_started_over(hub: &HubProcess, read: &ReadPastACopy) -> anyhow::Result<()> {
    wait_for_records(hub, 4).await?;
    let refused = cli_feed(hub, &read.token_file).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "the old token was answered");
    ensure!(stderr.contains("change log"), "{stderr}");

    std::fs::write(&read.token_file, "0")?;
    let again = cli_feed(hub, &read.token_file).await?;
    let delivered = String::from_utf8_lossy(&again.stdout).lines().count();
    ensure!(
        delivered == 4,
        "{delivered} records delivered after starting over"
    );
    Ok(())
}

/// A hub restored from an older copy keeps its store id, and the records the nodes give back
/// land at positions a department already read past. Refilled as the README says, the hub
/// names a new log, so the department's saved token is refused instead of skipping them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_past_a_restored_hubs_copy_is_refused_once_it_refills() -> anyhow::Result<()> {
    let read = read_past_a_copy().await?;
    // Haibin sees the hub's log went back and offers all four, the Market Supervision
    // Bureau's two among them.
    let hub = HubProcess::start_with(&read.copy, &read.addr, &["--refill-from-nodes"])?;
    refused_then_started_over(&hub, &read).await
}

/// The same restore with the hub started plainly, against the README: the nodes tell the hub
/// they saw its log reach further than it does, and the hub starts a new feed log itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_past_a_restored_hubs_copy_is_refused_without_the_refill_flag()
-> anyhow::Result<()> {
    let read = read_past_a_copy().await?;
    // Each office hands its own two cases back (the hub takes a record only from its author
    // without the flag).
    let hub = HubProcess::start(&read.copy, &read.addr)?;
    refused_then_started_over(&hub, &read).await
}

/// The hub's log file, from byte `from` on.
fn hub_log_since(hub: &HubProcess, from: usize) -> anyhow::Result<String> {
    let log = std::fs::read(hub.data_dir.with_extension("log"))?;
    Ok(String::from_utf8_lossy(log.get(from..).unwrap_or_default()).into_owned())
}

/// An office offline while a restored hub started a new feed log comes back after the hub
/// has restarted, still knowing the end of the log before the restore, further than the new
/// log reaches: old news of a log the hub replaced, not a second restore, so the department
/// keeps its place instead of starting over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_back_from_before_a_restore_does_not_start_the_feed_log_again()
-> anyhow::Result<()> {
    let mut read = read_past_a_copy().await?;
    let [_haibin, market] = &mut read.offices;
    // It saw the hub's log past the copy (its own two cases logged).
    market_offline_after_its_session_ended(market).await?;

    // Haibin saw the log reach further than the restored copy does: a new feed log, in which
    // the department starts over.
    let mut hub = restored_hub_with_a_new_feed_log(&read.copy, &read.addr).await?;
    std::fs::write(&read.token_file, "0")?;
    pull_feed(&hub, &read.token_file).await?;

    // The hub restarts, then the bureau comes back with its two cases and what it knew of the
    // log before the restore.
    let before_restart = std::fs::read(hub.data_dir.with_extension("log"))?.len();
    hub.restart()?;
    market.restart()?;
    wait_for_records(&hub, 4).await?;
    pull_feed(&hub, &read.token_file).await?;
    let log = hub_log_since(&hub, before_restart)?;
    ensure!(!log.contains("feeds start a new log"), "{log}");
    // The case in point: the bureau did report the old log's end, past the new log's.
    ensure!(
        log.contains("no news of this one"),
        "the bureau did not report the old log's end past the new one's: {log}"
    );
    Ok(())
}

/// Starts the hub on the restored copy and waits until Haibin, which saw the log reach
/// further, has made it start a new feed log.
async fn restored_hub_with_a_new_feed_log(copy: &Path, addr: &str) -> anyhow::Result<HubProcess> {
    let hub = HubProcess::start(copy, addr)?;
    eventually(
        "the restored hub to start a new feed log",
        Duration::from_secs(60),
        || async {
            Ok(hub_log_since(&hub, 0)?
                .contains("feeds start a new log")
                .then_some(()))
        },
    )
    .await?;
    Ok(hub)
}

/// Waits until the bureau's session has ended with the hub (so it wrote how far it saw the
/// hub's log), then takes the bureau offline.
async fn market_offline_after_its_session_ended(market: &mut NodeProcess) -> anyhow::Result<()> {
    let market_log = market.data_dir.with_extension("log");
    eventually(
        "the bureau's session to end with the hub",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(&market_log)?;
            let last_start = log.rfind("sync session started").unwrap_or(0);
            Ok(log[last_start..]
                .contains("sync session ended")
                .then_some(()))
        },
    )
    .await?;
    market.proc.kill9();
    Ok(())
}

/// The bureau was offline through the restore, and the restored hub's new log has grown past
/// the end the bureau knew by the time it returns: only the log's new name tells it the hub
/// lost what it had confirmed, and it offers its two cases again (found by a break-test: an
/// office's records missing on the hub while status said converged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_back_after_the_restored_log_outgrew_what_it_saw_offers_its_records_again()
-> anyhow::Result<()> {
    let mut read = read_past_a_copy().await?;
    let [haibin, market] = &mut read.offices;
    market_offline_after_its_session_ended(market).await?;

    let hub = restored_hub_with_a_new_feed_log(&read.copy, &read.addr).await?;
    // Haibin's new cases, for another office, take the new log past the old one's end
    // (the bureau saw 4).
    create_cases(haibin, "130304101", 6).await?;
    let district = hub.district().await?;
    eventually(
        "the hub's new log to pass the old one's end",
        Duration::from_secs(60),
        || {
            let mut district = district.clone();
            async move {
                let report = district
                    .convergence(pb::ConvergenceRequest::default())
                    .await?
                    .into_inner();
                Ok((report.hub_seq >= 8).then_some(()))
            }
        },
    )
    .await?;

    market.restart()?;
    wait_for_records(&hub, 4).await
}

/// A hub holding three of Haibin's cases shared with the Market Supervision Bureau, whose feed
/// the bureau has pulled once into a token file.
struct Pulled {
    temp: tempfile::TempDir,
    hub: HubProcess,
    _haibin: NodeProcess,
    token_file: std::path::PathBuf,
    /// The file as the pull left it: the token, then the log it belongs to.
    saved: String,
    log: String,
}

async fn three_cases_pulled() -> anyhow::Result<Pulled> {
    let temp = tempfile::Builder::new().prefix("linkage-feed-").tempdir()?;
    let hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
    let haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&hub.url()))?;
    create_cases(&haibin, MARKET, 3).await?;
    wait_for_three_records(&hub).await?;

    let token_file = temp.path().join("token.txt");
    pull_feed(&hub, &token_file).await?;
    let saved = std::fs::read_to_string(&token_file)?;
    let mut words = saved.split_whitespace();
    let token: u64 = words.next().context("token file is empty")?.parse()?;
    let log = words.next().context("token file names no log")?.to_owned();
    ensure!(token >= 3, "saved token {token}");
    Ok(Pulled {
        temp,
        hub,
        _haibin: haibin,
        token_file,
        saved,
        log,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_of_a_rebuilt_hubs_log_is_refused_with_how_to_start_over() -> anyhow::Result<()>
{
    // The department pulls the feed; the file keeps the token and the log it belongs to.
    let Pulled {
        temp,
        mut hub,
        _haibin,
        token_file,
        saved,
        log: first_log,
    } = three_cases_pulled().await?;

    // The hub's store is lost; a new hub on the same address is refilled by the node.
    hub.proc.kill9();
    hub = HubProcess::start(&temp.path().join("hub-rebuilt"), &hub.addr)?;
    wait_for_three_records(&hub).await?;

    let refused = cli_feed(&hub, &token_file).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "the old token was answered");
    for named in [
        "超出范围 out of range",
        first_log.as_str(),
        "to start over, delete",
    ] {
        ensure!(stderr.contains(named), "{named:?} not in: {stderr}");
    }
    ensure!(
        std::fs::read_to_string(&token_file)? == saved,
        "the refused token file was changed"
    );

    // Starting over, as the refusal says, delivers every record again.
    std::fs::write(&token_file, "0")?;
    let again = pull_feed(&hub, &token_file).await?;
    let delivered = String::from_utf8_lossy(&again.stdout).lines().count();
    ensure!(
        delivered == 3,
        "{delivered} records delivered after starting over"
    );
    ensure!(
        !std::fs::read_to_string(&token_file)?.contains(&first_log),
        "the token file still names the old log"
    );
    Ok(())
}

/// Token files the hub cannot check. A token past the end of the hub's log is refused, but a
/// made-up one must not make the hub start a new feed log: that would make every department
/// start over (found by a break-test). A bare number, as files were written before logs were
/// named, is read with a warning and the file then names the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_files_the_hub_cannot_check_are_refused_or_read_with_a_warning() -> anyhow::Result<()>
{
    let Pulled {
        temp,
        hub,
        _haibin,
        token_file,
        log,
        ..
    } = three_cases_pulled().await?;

    let made_up = temp.path().join("made-up.txt");
    std::fs::write(&made_up, format!("999 {log}"))?;
    let refused = cli_feed(&hub, &made_up).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success(),
        "a token past the end was answered"
    );
    ensure!(stderr.contains("past the end"), "{stderr}");

    let resumed = cli_feed(&hub, &token_file).await?;
    ensure!(
        resumed.status.success(),
        "the real department's token was refused: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );

    let bare = temp.path().join("bare.txt");
    std::fs::write(&bare, "1")?;
    let read = cli_feed(&hub, &bare).await?;
    let stderr = String::from_utf8_lossy(&read.stderr);
    ensure!(read.status.success(), "{stderr}");
    ensure!(
        stderr.contains("names no change log") && stderr.contains("write 0"),
        "no warning for a bare number: {stderr}"
    );
    ensure!(
        std::fs::read_to_string(&bare)?.contains(&log),
        "the file does not name the log after the run"
    );
    Ok(())
}

/// `linkage --json --hub URL feed --org MARKET --follow`, the real CLI, with the records it
/// has printed so far.
struct Follower {
    process: tokio::process::Child,
    /// The id of each record printed, in order; a record comes again with each change.
    printed: tokio::sync::watch::Receiver<Vec<String>>,
}

impl Follower {
    fn start(hub_url: &str) -> anyhow::Result<Self> {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let mut process = tokio::process::Command::new(bin("linkage")?)
            .args([
                "--json", "--hub", hub_url, "feed", "--org", MARKET, "--follow",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (printed_tx, printed) = tokio::sync::watch::channel(Vec::new());
        let mut lines = BufReader::new(process.stdout.take().context("piped stdout")?).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let id = event["record"]["envelope"]["id"].as_str().unwrap_or(&line);
                printed_tx.send_modify(|ids| ids.push(id.to_owned()));
            }
        });
        Ok(Self { process, printed })
    }

    /// How many records it has printed, each counted once.
    fn records(ids: &[String]) -> usize {
        ids.iter().collect::<std::collections::BTreeSet<_>>().len()
    }

    /// Waits up to 60 s until it has printed `count` records.
    async fn printed(&self, count: usize) -> anyhow::Result<()> {
        let mut printed = self.printed.clone();
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            printed.wait_for(|ids| Self::records(ids) >= count),
        )
        .await
        .map(|printing| printing.is_ok());
        let printed = printed.borrow().clone();
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => anyhow::bail!("the follower ended after printing {printed:?}"),
            Err(_) => anyhow::bail!("in 60 s the follower printed only {printed:?}"),
        }
    }

    /// Ends it (it is still following, or says why not) and returns what it said on stderr.
    async fn stop(mut self) -> anyhow::Result<String> {
        ensure!(
            self.process.try_wait()?.is_none(),
            "the follower is still following"
        );
        self.process.start_kill()?;
        let stderr = self.process.wait_with_output().await?.stderr;
        Ok(String::from_utf8_lossy(&stderr).into_owned())
    }
}

/// `linkage feed --follow` goes on across a hub killed with SIGKILL and started again, twice:
/// it waits for the hub, subscribes again from the last event it printed (saying so), and
/// prints the records made meanwhile. (It ended with "connection lost", and a department's system that
/// did not restart it missed everything after.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_feed_goes_on_after_the_hub_is_killed_and_restarted() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("linkage-follow-")
        .tempdir()?;
    let mut hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
    let haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&hub.url()))?;
    create_cases(&haibin, MARKET, 3).await?;
    wait_for_three_records(&hub).await?;

    let follower = Follower::start(&hub.url())?;
    follower.printed(3).await?;
    hub.restart()?;
    create_cases(&haibin, MARKET, 2).await?;
    follower.printed(5).await?;
    // Once more: a hub that came back resets the wait, so this outage too is first retried
    // after a second.
    hub.restart()?;
    create_cases(&haibin, MARKET, 1).await?;
    follower.printed(6).await?;

    let ids = follower.printed.borrow().clone();
    ensure!(Follower::records(&ids) == 6, "six records: {ids:?}");
    let stderr = follower.stop().await?;
    ensure!(
        stderr.matches("reconnecting in 1 s, from position").count() >= 2,
        "the follower says it is reconnecting, after a second each time: {stderr}"
    );
    ensure!(
        stderr
            .matches("reconnected: the feed goes on from position")
            .count()
            == 2,
        "the follower says when it is back, once per outage: {stderr}"
    );
    Ok(())
}

/// A followed feed whose link goes silent without closing (half-open: the far end gone without
/// a FIN or a reset) notices within its keepalive, about 15 s, and subscribes again through a
/// new connection. (The CLI had no keepalive and waited for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_feed_notices_a_link_gone_silent_and_subscribes_again() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("linkage-silent-")
        .tempdir()?;
    let hub = HubProcess::start(&temp.path().join("hub"), "127.0.0.1:0")?;
    let haibin = NodeProcess::start(HAIBIN, &temp.path().join("haibin"), Some(&hub.url()))?;
    create_cases(&haibin, MARKET, 2).await?;
    wait_for_records(&hub, 2).await?;
    let link = linkage_tests::proxy::Proxy::start(hub.addr.parse()?).await?;

    let follower = Follower::start(&link.url())?;
    follower.printed(2).await?;
    link.half_open();
    create_cases(&haibin, MARKET, 1).await?;
    follower
        .printed(3)
        .await
        .context("the record made after the link went silent arrives through a new connection")?;
    follower.stop().await?;
    Ok(())
}
