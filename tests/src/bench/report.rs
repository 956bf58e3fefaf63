//! Figures and the table: each Linkage figure, the best of the two peers on the same figure
//! where they measure it, and the ratio Linkage / peer (below 1 means Linkage is smaller, which
//! for every compared figure means better). Rendered for the terminal and as Markdown for
//! `bench/results/`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::peers::{PeerOutcome, PeerRun};
use super::{Plan, Sizes};

/// A figure the peers' runners also report, so a ratio can be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Offline creation and updates, every office at once.
    Create,
    /// From the first connection until every office holds every record at its final heads.
    Sync,
    /// Bytes through the hub's connections during sync, both directions.
    SyncWire,
    /// Hub CPU time during sync.
    SyncHubCpu,
    /// Hub CPU time per record copy delivered (N·(N−1)·D copies).
    HubCpuPerCopy,
    /// Wire bytes per record copy delivered.
    WirePerCopy,
    /// The hub's peak resident memory over the whole run.
    HubPeakRss,
    /// Bytes the hub keeps on disk at the end.
    HubDisk,
    /// From reconnection until every other office sees the offline updates.
    Reconnect,
    /// Bytes through the hub during the reconnect.
    ReconnectWire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Bytes,
    CpuSeconds,
    CpuMs,
    Mib,
    PerSecond,
    Micros,
    Ratio,
    Count,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Ms if value >= 1_000.0 => format!("{:.2} s", value / 1_000.0),
            Unit::Ms if value >= 10.0 => format!("{value:.0} ms"),
            Unit::Ms => format!("{value:.2} ms"),
            Unit::Bytes => bytes(value),
            Unit::CpuSeconds => format!("{value:.2} s CPU"),
            Unit::CpuMs => format!("{value:.2} ms CPU"),
            Unit::Mib => format!("{value:.1} MiB"),
            Unit::PerSecond => format!("{value:.0} /s"),
            Unit::Micros => format!("{value:.1} µs"),
            Unit::Ratio => format!("{value:.2}"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}

fn bytes(value: f64) -> String {
    const KIB: f64 = 1024.0;
    if value >= KIB * KIB {
        format!("{:.2} MiB", value / KIB / KIB)
    } else if value >= KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{value:.0} B")
    }
}

/// One measured figure of Linkage.
#[derive(Debug, Clone)]
pub struct Figure {
    pub workload: String,
    pub name: String,
    /// `None` when the workload did not get there (see `note`).
    pub value: Option<f64>,
    pub unit: Unit,
    pub metric: Option<Metric>,
    pub note: Option<String>,
}

impl Figure {
    pub fn new(workload: &str, name: impl Into<String>, value: f64, unit: Unit) -> Self {
        Figure {
            workload: workload.to_owned(),
            name: name.into(),
            value: Some(value),
            unit,
            metric: None,
            note: None,
        }
    }

    /// A figure the workload could not measure, with the reason.
    pub fn missing(workload: &str, name: impl Into<String>, unit: Unit, why: String) -> Self {
        Figure {
            value: None,
            note: Some(why),
            ..Figure::new(workload, name, 0.0, unit)
        }
    }

    /// Compared with the peers' value of `metric`.
    pub fn vs(mut self, metric: Metric) -> Self {
        self.metric = Some(metric);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn shown(&self) -> String {
        let value = match self.value {
            Some(v) => self.unit.format(v),
            None => "—".to_owned(),
        };
        match &self.note {
            Some(note) => format!("{value} ({note})"),
            None => value,
        }
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub sizes: Sizes,
    pub figures: Vec<Figure>,
    pub peers: Vec<PeerRun>,
    /// Workloads that failed, with the error.
    pub failures: Vec<(String, String)>,
}

impl Report {
    pub fn new(plan: &Plan) -> Self {
        Report {
            sizes: plan.sizes.clone(),
            figures: Vec::new(),
            peers: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// The best (smallest) value any peer reached for `metric`, with the peer's name.
    fn best_peer(&self, metric: Metric) -> Option<(f64, &'static str)> {
        self.peers
            .iter()
            .filter_map(|run| run.value(metric).map(|v| (v, run.peer.name())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// What the peer column says when no peer has a value: why not, in a word per peer (the
    /// lines under the table say more).
    fn peer_absence(&self) -> String {
        if self.peers.is_empty() {
            return "not run".into();
        }
        self.peers
            .iter()
            .map(|run| {
                let word = match run.outcome {
                    PeerOutcome::Finished(_) => "not measured",
                    PeerOutcome::Partial { .. } => "did not finish",
                    PeerOutcome::Failed(_) => "failed",
                };
                format!("{}: {word}", run.peer.name())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Rows of the table: workload, figure, Linkage, peer, ratio.
    pub fn rows(&self) -> Vec<[String; 5]> {
        self.figures
            .iter()
            .map(|figure| {
                let (peer, ratio) = match figure.metric {
                    None => (String::new(), String::new()),
                    Some(metric) => match self.best_peer(metric) {
                        Some((value, name)) => {
                            let ratio = match figure.value {
                                Some(ours) if value > 0.0 => format!("{:.2}", ours / value),
                                _ => "—".into(),
                            };
                            (format!("{} ({name})", figure.unit.format(value)), ratio)
                        }
                        None => (self.peer_absence(), "—".into()),
                    },
                };
                [
                    figure.workload.clone(),
                    figure.name.clone(),
                    figure.shown(),
                    peer,
                    ratio,
                ]
            })
            .collect()
    }

    const HEADER: [&'static str; 5] = [
        "workload",
        "figure",
        "Linkage",
        "peer (best of the two)",
        "Linkage / peer",
    ];

    pub fn table(&self) -> String {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(Self::HEADER);
        for row in self.rows() {
            table.add_row(row);
        }
        table.to_string()
    }

    /// What the peers did, one line each, and every failed workload.
    pub fn details(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.peers.iter().map(PeerRun::summary).collect();
        for (workload, error) in &self.failures {
            lines.push(format!("{workload} FAILED: {error}"));
        }
        lines
    }

    pub fn markdown(&self) -> String {
        let escape = |cell: &str| cell.replace('|', "\\|");
        let mut out = format!("| {} |\n", Self::HEADER.join(" | "));
        out.push_str(&format!("|{}\n", "---|".repeat(Self::HEADER.len())));
        for row in self.rows() {
            let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        let details = self.details();
        if !details.is_empty() {
            out.push('\n');
            for line in details {
                out.push_str(&format!("- {}\n", escape(&line)));
            }
        }
        out
    }

    /// Whether every planned workload produced its figures (the smoke test's check).
    pub fn complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether every peer that ran finished its whole workload.
    pub fn peers_finished(&self) -> bool {
        self.peers
            .iter()
            .all(|run| matches!(run.outcome, PeerOutcome::Finished(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_pick_readable_scales() {
        assert_eq!(Unit::Ms.format(1_530.0), "1.53 s");
        assert_eq!(Unit::Ms.format(42.4), "42 ms");
        assert_eq!(Unit::Bytes.format(3.0 * 1024.0 * 1024.0), "3.00 MiB");
        assert_eq!(Unit::Bytes.format(2048.0), "2.0 KiB");
        assert_eq!(Unit::Bytes.format(12.0), "12 B");
    }
}
