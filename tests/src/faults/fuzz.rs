//! Placeholder.
use std::fmt::Write;

#[derive(Debug, Clone, Default)]
pub struct TargetTally {
    pub name: &'static str,
    pub inputs: u64,
    pub refused: u64,
    pub accepted: u64,
    pub failures: Vec<String>,
}

pub async fn sweep(_seed: u64, _cases: u32, _say: &mut dyn FnMut(String)) -> anyhow::Result<Vec<TargetTally>> {
    Ok(Vec::new())
}

pub fn render(tallies: &[TargetTally]) -> String {
    let mut out = String::new();
    for t in tallies {
        let _ = writeln!(out, "{} {}", t.name, t.inputs);
    }
    out
}
