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
        let verdict = if self.held() {
            format!(
                "{} (no acknowledged write lost or doubled, the negative control caught its loss, no fuzz input broke a property)",
                held_unless_not_exercised(&self.not_exercised())
            )
        } else {
            "FAILED (see above)".to_owned()
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }

    /// The checks either kill loop did not make, named by the loop they belong to.
    pub fn not_exercised(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .kill_loop
            .not_exercised()
            .into_iter()
            .map(|check| format!("kill loop's {check}"))
            .collect();
        missing.extend(
            self.negative_control
                .not_exercised()
                .into_iter()
                .map(|check| format!("negative control's {check}")),
        );
        missing
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
        if o.restart_checks == 0 {
            "0: not exercised (no node was read alone after a restart)".to_owned()
        } else {
            format!(
                "{} (link cut, against their own acknowledged writes)",
                o.restart_checks
            )
        },
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
    let not_exercised: Vec<String> = o.not_exercised().into_iter().map(String::from).collect();
    let verdict = match (o.negative_control, o.held()) {
        (false, true) => format!(
            "{}: every acknowledged write present once on both offices and the hub",
            held_unless_not_exercised(&not_exercised)
        ),
        (false, false) => "FAILED: acknowledged writes lost, doubled or not converged".into(),
        (true, false) => "LOSS DETECTED, as it must be: the check can fail".into(),
        (true, true) => {
            "CONTROL FAILED: no loss detected from an unsafe store; the check proves nothing".into()
        }
    };
    line(&mut out, "verdict", verdict);
    out
}

/// "HELD", or "HELD (X and Y not exercised in this run)": a verdict holds only for the checks
/// that ran.
fn held_unless_not_exercised(not_exercised: &[String]) -> String {
    if not_exercised.is_empty() {
        "HELD".into()
    } else {
        format!(
            "HELD ({} not exercised in this run)",
            not_exercised.join(" and ")
        )
    }
}

fn map<K: std::fmt::Display, V: std::fmt::Display>(m: &std::collections::BTreeMap<K, V>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::fuzz::TargetTally;

    /// A kill loop that held, with `restart_checks` nodes read alone after a restart.
    fn held_loop(negative_control: bool, restart_checks: u32) -> KillLoopOutcome {
        KillLoopOutcome {
            seed: 7,
            cycles: 3,
            negative_control,
            kills: [("hub".to_owned(), 3)].into(),
            creations_acknowledged: 9,
            events_acknowledged: 9,
            restart_checks,
            converged: true,
            ..KillLoopOutcome::default()
        }
    }

    #[test]
    fn a_kill_loop_without_a_restart_alone_check_does_not_hold_for_it() {
        let figures = render_kill_loop(&held_loop(false, 0));
        assert!(
            figures.contains("0: not exercised"),
            "the figure says the check did not run:\n{figures}"
        );
        assert!(
            figures.contains(
                "HELD (restart-alone check not exercised in this run): every acknowledged"
            ),
            "{figures}"
        );

        let figures = render_kill_loop(&held_loop(false, 2));
        assert!(
            figures.contains("HELD: every acknowledged") && !figures.contains("not exercised"),
            "{figures}"
        );
    }

    #[test]
    fn the_reports_verdict_names_the_check_its_kill_loop_did_not_make() {
        let mut loss = held_loop(true, 3);
        loss.missing = vec!["x: record r1".into()];
        let report = FaultReport {
            seed: 7,
            kill_loop: held_loop(false, 0),
            negative_control: loss,
            fuzz: FuzzRun {
                tallies: vec![TargetTally::default()],
                ..FuzzRun::default()
            },
        };
        assert!(report.held());
        let text = report.render();
        let verdict = text.lines().last().unwrap();
        assert!(
            verdict.starts_with(
                "verdict: HELD (kill loop's restart-alone check not exercised in this run)"
            ),
            "{text}"
        );
    }
}
