//! The two peers, run through their own runners (`../shared/bench/*/run.sh`) on the district
//! workload's N, D and U, and their JSON read into the figures Linkage is compared on.
//!
//! Each runner installs or builds its peer on first use (npm, cargo), starts its own hub on
//! 127.0.0.1 and stops itself after its watchdog; the harness adds its own timeout on top and
//! then kills the runner's process group (which it created), reporting how far the peer got.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::report::Metric;
use super::{Plan, Progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// automerge-repo 2.5 with its sync server (JavaScript), plain strings.
    AutomergeRepo,
    /// samod 0.16, the Rust automerge-repo.
    Samod,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::AutomergeRepo, Peer::Samod];

    pub fn name(self) -> &'static str {
        match self {
            Peer::AutomergeRepo => "automerge-repo",
            Peer::Samod => "samod",
        }
    }
}

/// What a peer's result says, in the harness's units (ms, bytes, CPU seconds, MiB).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerFigures {
    pub create_ms: Option<f64>,
    pub sync_ms: Option<f64>,
    pub sync_wire: Option<f64>,
    pub sync_hub_cpu_s: Option<f64>,
    /// Record copies delivered during sync, and how many there were to deliver.
    pub copies_done: Option<f64>,
    pub copies_total: Option<f64>,
    pub hub_peak_rss_mib: Option<f64>,
    pub hub_disk: Option<f64>,
    pub reconnect_ms: Option<f64>,
    pub reconnect_wire: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerOutcome {
    /// Every phase finished.
    Finished(PeerFigures),
    /// The peer stopped part-way (its watchdog or a phase timeout): the figures it has, and
    /// how far it got.
    Partial { figures: PeerFigures, why: String },
    /// No result at all.
    Failed(String),
}

impl PeerOutcome {
    pub fn short(&self) -> String {
        match self {
            PeerOutcome::Finished(_) => "finished".into(),
            PeerOutcome::Partial { why, .. } => why.clone(),
            PeerOutcome::Failed(why) => format!("failed: {why}"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PeerOutcome::Finished(f) => format!(
                "finished: sync {}, reconnect {}",
                ms_text(f.sync_ms),
                ms_text(f.reconnect_ms)
            ),
            other => other.short(),
        }
    }
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map_or_else(|| "—".into(), |ms| format!("{:.2} s", ms / 1000.0))
}

#[derive(Debug, Clone)]
pub struct PeerRun {
    pub peer: Peer,
    pub outcome: PeerOutcome,
    pub elapsed: Duration,
    /// The runner's stderr.
    pub log: PathBuf,
}

impl PeerRun {
    /// The peer's value of `metric`, if it measured it.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        let f = match &self.outcome {
            PeerOutcome::Finished(f) | PeerOutcome::Partial { figures: f, .. } => f,
            PeerOutcome::Failed(_) => return None,
        };
        let per_copy = |total: Option<f64>| {
            let copies = f.copies_total?;
            (copies > 0.0 && f.sync_ms.is_some()).then(|| total.map(|t| t / copies))?
        };
        match metric {
            Metric::Create => f.create_ms,
            Metric::Sync => f.sync_ms,
            Metric::SyncWire => f.sync_ms.and(f.sync_wire),
            Metric::SyncHubCpu => f.sync_ms.and(f.sync_hub_cpu_s),
            Metric::HubCpuPerCopy => per_copy(f.sync_hub_cpu_s.map(|s| s * 1000.0)),
            Metric::WirePerCopy => per_copy(f.sync_wire),
            Metric::HubPeakRss => f.hub_peak_rss_mib,
            Metric::HubDisk => f.hub_disk,
            Metric::Reconnect => f.reconnect_ms,
            Metric::ReconnectWire => f.reconnect_ms.and(f.reconnect_wire),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} ({:.0} s including install/build; log {}): {}",
            self.peer.name(),
            self.elapsed.as_secs_f64(),
            self.log.display(),
            self.outcome.describe()
        )
    }
}

/// Runs one peer on the plan's district sizes.
pub async fn run(peer: Peer, plan: &Plan, progress: &Progress) -> PeerRun {
    let started = Instant::now();
    let log = plan.root.join("peers").join(format!("{}.log", peer.name()));
    let outcome = match run_script(peer, plan, &log, progress).await {
        Ok(outcome) => outcome,
        Err(e) => PeerOutcome::Failed(format!("{e:#}")),
    };
    PeerRun {
        peer,
        outcome,
        elapsed: started.elapsed(),
        log,
    }
}

async fn run_script(
    peer: Peer,
    plan: &Plan,
    log: &std::path::Path,
    progress: &Progress,
) -> anyhow::Result<PeerOutcome> {
    let folder = match peer {
        Peer::AutomergeRepo => "automerge-repo",
        Peer::Samod => "samod",
    };
    let script = plan.peers_dir.join(folder).join("run.sh");
    anyhow::ensure!(script.exists(), "{} not found", script.display());
    std::fs::create_dir_all(log.parent().expect("log has a folder"))?;
    let stderr = std::fs::File::create(log)?;

    let s = &plan.sizes;
    // The peers' own watchdogs end their runs (with a partial result) before the harness's
    // timeout would kill them; installs and builds come before their watchdogs start.
    let watchdog = plan
        .peer_timeout
        .as_secs()
        .saturating_sub(60)
        .clamp(60, 290);
    let phase = watchdog.saturating_sub(40).max(30) / 2;
    let per_doc = (s.reconnect_updates / s.reconnect_records.max(1)).max(1);
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&script)
        .env("N", s.offices.to_string())
        .env("D", s.records.to_string())
        .env("U", s.updates.to_string())
        .env("STRING_MODE", "immutable")
        .env("RUN_TIMEOUT_S", watchdog.to_string())
        .env("WATCHDOG_S", watchdog.to_string())
        .env("PHASE_TIMEOUT_S", phase.to_string())
        .env("RECONNECT_DOCS", s.reconnect_records.to_string())
        .env("RECONNECT_UPDATES_PER_DOC", per_doc.to_string())
        .env("R_DOCS", s.reconnect_records.to_string())
        .env("R_UPDATES", s.reconnect_updates.to_string())
        // A target folder set for this workspace (CI sets one) would send samod's build
        // elsewhere than its runner looks for it.
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        // Its own process group, so a timeout ends the runner's hub and clients with it.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let pid = child.id().context("peer runner has a pid")?;
    let mut group = GroupGuard {
        pgid: pid,
        armed: true,
    };

    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + plan.peer_timeout;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let output = loop {
        tokio::select! {
            out = &mut output => break Some(out?),
            _ = tick.tick() => {
                progress.status(format!(
                    "{}: {:.0} s — {}",
                    peer.name(),
                    started.elapsed().as_secs_f64(),
                    last_line(log)
                ));
                if tokio::time::Instant::now() > deadline {
                    break None;
                }
            }
        }
    };
    let Some(output) = output else {
        drop(group);
        return Ok(PeerOutcome::Failed(format!(
            "timed out after {} s with no result; last output: {}",
            plan.peer_timeout.as_secs(),
            last_line(log)
        )));
    };

    // The runner exited and stopped what it started; its group id may be reused from now on.
    group.armed = false;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .map(|_| stdout.trim());
    let Some(text) = json else {
        return Ok(PeerOutcome::Failed(format!(
            "exit {:?} with no JSON; last output: {}",
            output.status.code(),
            last_line(log)
        )));
    };
    // The automerge-repo runner prints a pretty-printed file, samod one line: parse the
    // last JSON object either way.
    let start = if text.starts_with('{') {
        0
    } else {
        text.rfind("\n{").map_or(0, |i| i + 1)
    };
    let value: Value = serde_json::from_str(&text[start..]).context("peer JSON")?;
    Ok(match peer {
        Peer::AutomergeRepo => parse_automerge_repo(&value),
        Peer::Samod => parse_samod(&value),
    })
}

/// Ends the runner and everything it started when the run ends by timeout, by an error or
/// because the harness was interrupted: its process group, which the harness created. After a
/// normal exit the runner has stopped its children itself, and the guard is disarmed.
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid);
        }
    }
}

/// Sends SIGKILL to process group `pgid`, by the system call: procps-ng's `kill` reads
/// `kill -KILL -<pgid>` as `kill(-1)`, every process the user may signal, which ended the
/// whole machine's sessions when a peer timed out. Groups 0 and 1 (this process's own group,
/// init's) are never signalled.
fn kill_group(pgid: u32) {
    let group = i32::try_from(pgid)
        .ok()
        .filter(|&group| group > 1)
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

fn last_line(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.chars().take(100).collect()
}

fn num(value: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

pub fn parse_automerge_repo(v: &Value) -> PeerOutcome {
    let distribute = |key: &str| num(v, &["phases", "distribute", key]);
    let reconnect = |key: &str| num(v, &["phases", "reconnect", key]);
    let mut figures = PeerFigures {
        create_ms: num(v, &["phases", "create", "wallMs"]),
        sync_ms: distribute("wallMs"),
        sync_wire: sum(
            num(v, &["phases", "distribute", "hubTcp", "rx"]),
            num(v, &["phases", "distribute", "hubTcp", "tx"]),
        ),
        sync_hub_cpu_s: distribute("hubCpuMs").map(|ms| ms / 1000.0),
        copies_done: distribute("docPairs"),
        copies_total: distribute("docPairs"),
        hub_peak_rss_mib: num(v, &["hubFinal", "vmHWM"]).map(|b| b / 1024.0 / 1024.0),
        hub_disk: num(v, &["hubFinal", "storage", "bytes"]),
        reconnect_ms: reconnect("wallMs"),
        reconnect_wire: sum(
            num(v, &["phases", "reconnect", "hubTcp", "rx"]),
            num(v, &["phases", "reconnect", "hubTcp", "tx"]),
        ),
    };
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return PeerOutcome::Finished(figures);
    }
    let error = v
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no error given")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let done = num(v, &["progressAtTimeout", "distributePairsDone"]);
    let total = num(v, &["progressAtTimeout", "distributePairsTotal"]);
    figures.copies_done = done;
    figures.copies_total = total.or(figures.copies_total);
    if figures.hub_peak_rss_mib.is_none() {
        figures.hub_peak_rss_mib = num(v, &["hubAtTimeout", "vmHWM"]).map(|b| b / 1024.0 / 1024.0);
    }
    let how_far = match (done, total) {
        (Some(done), Some(total)) if total > 0.0 => format!(
            "; {done:.0} of {total:.0} record copies delivered ({:.0}%)",
            100.0 * done / total
        ),
        _ if figures.sync_ms.is_some() => "; distribution had finished".into(),
        _ => "; distribution progress unknown".into(),
    };
    PeerOutcome::Partial {
        figures,
        why: format!("{error}{how_far}"),
    }
}

pub fn parse_samod(v: &Value) -> PeerOutcome {
    let n = |key: &str| num(v, &[key]);
    let errors = n("errors").unwrap_or(0.0);
    let reconnect_errors = n("reconnect_errors").unwrap_or(0.0);
    let copies_done = n("doc_copies_synced");
    let copies_total = sum(copies_done, Some(errors));
    let synced = errors == 0.0;
    let reconnected = synced && reconnect_errors == 0.0;
    let figures = PeerFigures {
        create_ms: n("create_update_ms"),
        sync_ms: n("sync_ms").filter(|_| synced),
        sync_wire: sum(n("hub_bytes_in_sync"), n("hub_bytes_out_sync")),
        sync_hub_cpu_s: n("hub_cpu_s_sync"),
        copies_done,
        copies_total,
        hub_peak_rss_mib: n("hub_peak_rss_kb").map(|kb| kb / 1024.0),
        hub_disk: n("hub_storage_bytes"),
        reconnect_ms: n("reconnect_ms").filter(|_| reconnected),
        reconnect_wire: sum(n("hub_bytes_in_reconnect"), n("hub_bytes_out_reconnect")),
    };
    if reconnected {
        return PeerOutcome::Finished(figures);
    }
    let first_error = v.get("first_error").and_then(Value::as_str).unwrap_or("");
    let why = match (copies_done, copies_total) {
        (Some(done), Some(total)) if !synced => format!(
            "sync timed out: {done:.0} of {total:.0} record copies delivered ({:.0}%); {first_error}",
            100.0 * done / total.max(1.0)
        ),
        _ => format!("reconnect timed out: {reconnect_errors:.0} updates not seen; {first_error}"),
    };
    PeerOutcome::Partial { figures, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Whether process `pid` has exited, waiting up to 10 s for it.
    fn exits(child: &mut std::process::Child) -> bool {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// An armed guard ends its runner's process group, children and all, and nothing outside
    /// it; a disarmed one ends nothing.
    #[test]
    fn a_group_guard_ends_its_group_and_nothing_else() {
        use std::os::unix::process::CommandExt;
        let spawn = |own_group: bool| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            if own_group {
                command.process_group(0);
            }
            command.spawn().unwrap()
        };
        let mut runner = spawn(true);
        let mut bystander = spawn(false);
        let mut spared = spawn(true);

        drop(GroupGuard {
            pgid: spared.id(),
            armed: false,
        });
        drop(GroupGuard {
            pgid: runner.id(),
            armed: true,
        });
        assert!(exits(&mut runner), "the runner's group was ended");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a process outside it runs on"
        );
        assert!(
            spared.try_wait().unwrap().is_none(),
            "a disarmed guard ends nothing"
        );

        for mut other in [bystander, spared] {
            other.kill().unwrap();
            other.wait().unwrap();
        }
    }

    #[test]
    fn automerge_repo_result_gives_every_figure() {
        let v = json!({
            "ok": true,
            "phases": {
                "create": {"wallMs": 900.0},
                "distribute": {"wallMs": 9100.0, "hubCpuMs": 2600.0, "docPairs": 400,
                               "hubTcp": {"rx": 1000, "tx": 2000}},
                "reconnect": {"wallMs": 1300.0, "hubTcp": {"rx": 10, "tx": 20}}
            },
            "hubFinal": {"vmHWM": 133169152, "storage": {"bytes": 5000}}
        });
        let PeerOutcome::Finished(f) = parse_automerge_repo(&v) else {
            panic!("finished run")
        };
        assert_eq!(f.sync_wire, Some(3000.0));
        assert_eq!(f.reconnect_wire, Some(30.0));
        assert!((f.hub_peak_rss_mib.unwrap() - 127.0).abs() < 0.1);
        let run = PeerRun {
            peer: Peer::AutomergeRepo,
            outcome: PeerOutcome::Finished(f),
            elapsed: Duration::ZERO,
            log: PathBuf::new(),
        };
        assert_eq!(run.value(Metric::HubCpuPerCopy), Some(6.5));
    }

    #[test]
    fn automerge_repo_timeout_says_how_far_it_got() {
        let v = json!({
            "ok": false, "error": "timeout after 290s",
            "progressAtTimeout": {"distributePairsDone": 68, "distributePairsTotal": 100},
            "phases": {"create": {"wallMs": 900.0}}
        });
        let outcome = parse_automerge_repo(&v);
        assert!(outcome.short().contains("68%"), "{}", outcome.short());
        let PeerOutcome::Partial { figures, .. } = outcome else {
            panic!("partial run")
        };
        assert_eq!(figures.sync_ms, None);
    }

    #[test]
    fn samod_with_errors_has_no_sync_time() {
        let v = json!({"sync_ms": 200000.0, "errors": 25, "doc_copies_synced": 75,
                       "reconnect_errors": 0, "reconnect_ms": 100.0, "first_error": "x"});
        let outcome = parse_samod(&v);
        assert!(outcome.short().contains("75 of 100"), "{}", outcome.short());
        let PeerOutcome::Partial { figures, .. } = outcome else {
            panic!("partial run")
        };
        assert_eq!(figures.sync_ms, None);
        assert_eq!(figures.reconnect_ms, None);
    }
}
