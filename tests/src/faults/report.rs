//! The fault report: one run of the short kill loop, its negative control and the fuzz sweep,
//! printed as figures that can be quoted (`tests/FAULTS.md` keeps the last one).

use std::fmt::Write;

use super::fuzz::{self, FuzzRun};
use super::kill_loop::{self, KillLoopConfig, KillLoopOutcome};

/// Everything one `linkage-faults report` exercised and what held.
#[derive(Debug)]
pub struct FaultReport {
    pub seed: u64,
    pub kill_loop: KillLoopOutcome,
    pub negative_control: KillLoopOutcome,
    pub fuzz: FuzzRun,
}

impl FaultReport {
    /// The kill loop held, the negative control detected loss, and no fuzz input broke a
    /// property.
    pub fn held(&self) -> bool {
        self.kill_loop.held() && !self.negative_control.held() && self.fuzz.held()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Linkage fault report (seed {})", self.seed);
        let _ = writeln!(out);
        let _ = writeln!(out, "## Kill loop");
        out += &render_kill_loop(&self.kill_loop);
        let _ = writeln!(out);
        let _ = writeln!(out, "## Negative control (store without write-ahead log)");
        out += &render_kill_loop(&self.negative_control);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "## Fuzz properties (bad bytes into every decoder and entry point)"
        );
        out += &fuzz::render(&self.fuzz);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.held() {
                "HELD (no acknowledged write lost or doubled, the negative control caught its loss, no fuzz input broke a property)"
            } else {
                "FAILED (see above)"
            }
        );
        out
    }
}

/// Runs the report's three parts with `seed` (the negative control uses `seed + 1`).
pub async fn run(
    seed: u64,
    cycles: u32,
    fuzz_cases: Option<u32>,
    say: &mut dyn FnMut(String),
) -> anyhow::Result<FaultReport> {
    let kill_loop = kill_loop::run(&KillLoopConfig::new(cycles, seed), say).await?;
    let negative_control = kill_loop::run(
        &KillLoopConfig {
            negative_control: true,
            ..KillLoopConfig::new(cycles, seed.wrapping_add(1))
        },
        say,
    )
    .await?;
    let fuzz = fuzz::sweep(seed, fuzz_cases, say).await?;
    Ok(FaultReport {
        seed,
        kill_loop,
        negative_control,
        fuzz,
    })
}

/// One kill loop's figures, one per line.
pub fn render_kill_loop(o: &KillLoopOutcome) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: String| {
        let _ = writeln!(out, "{key:<34} {value}");
    };
    line(&mut out, "seed", o.seed.to_string());
    line(&mut out, "cycles", o.cycles.to_string());
    line(
        &mut out,
        "kills survived (SIGKILL + restart)",
        format!("{} {}", o.kills_total(), map(&o.kills)),
    );
    line(
        &mut out,
        "link faults injected",
        format!(
            "{} {}",
            o.link_faults.values().sum::<u32>(),
            map(&o.link_faults)
        ),
    );
    line(&mut out, "writes attempted", o.writes_attempted.to_string());
    line(
        &mut out,
        "writes acknowledged",
        format!(
            "{} ({} records created, {} events appended)",
            o.creations_acknowledged + o.events_acknowledged,
            o.creations_acknowledged,
            o.events_acknowledged
        ),
    );
    line(
        &mut out,
        "writes refused or failed",
        format!(
            "{} {}",
            o.writes_failed.values().sum::<u64>(),
            map(&o.writes_failed)
        ),
    );
    line(
        &mut out,
        "unacknowledged but stored",
        format!(
            "{} (allowed: killed between commit and answer)",
            o.unacknowledged_but_stored
        ),
    );
    line(
        &mut out,
        "restarted nodes checked alone",
        format!(
            "{} (link cut, against their own acknowledged writes)",
            o.restart_checks
        ),
    );
    line(
        &mut out,
        "records held (nodes, hub)",
        format!(
            "{} / {} / {}",
            o.records_on_nodes[0], o.records_on_nodes[1], o.records_on_hub
        ),
    );
    line(
        &mut out,
        "offices converged",
        match o.converged_after {
            Some(after) => format!(
                "yes, {:.1} s after the last fault was healed",
                after.as_secs_f64()
            ),
            None => "NO".into(),
        },
    );
    line(
        &mut out,
        "acknowledged writes missing",
        format!(
            "{} ({} still missing after convergence)",
            o.missing.len(),
            o.missing_at_end
        ),
    );
    line(
        &mut out,
        "writes duplicated",
        o.duplicated.len().to_string(),
    );
    for item in o.missing.iter().take(10) {
        let _ = writeln!(out, "  missing: {item}");
    }
    if o.missing.len() > 10 {
        let _ = writeln!(out, "  ... and {} more", o.missing.len() - 10);
    }
    for item in o.duplicated.iter().take(10) {
        let _ = writeln!(out, "  duplicated: {item}");
    }
    line(
        &mut out,
        "elapsed",
        format!("{:.1} s", o.elapsed.as_secs_f64()),
    );
    if let Some(dir) = &o.data_dir {
        line(&mut out, "data and logs", dir.display().to_string());
    }
    let verdict = match (o.negative_control, o.held()) {
        (false, true) => "HELD: every acknowledged write present once on both offices and the hub",
        (false, false) => "FAILED: acknowledged writes lost, doubled or not converged",
        (true, false) => "LOSS DETECTED, as it must be: the check can fail",
        (true, true) => {
            "CONTROL FAILED: no loss detected from an unsafe store; the check proves nothing"
        }
    };
    line(&mut out, "verdict", verdict.into());
    out
}

fn map<K: std::fmt::Display, V: std::fmt::Display>(m: &std::collections::BTreeMap<K, V>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("({})", parts.join(", "))
}
