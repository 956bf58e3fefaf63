//! The fault report's fuzz figures. The properties themselves live beside the code they feed
//! (`node/tests/fuzz.rs`, `hub/tests/fuzz_sync.rs`) and run in CI; the report runs the same
//! test targets through `cargo test` with its seed (`PROPTEST_RNG_SEED`) and, if asked, more
//! cases (`LINKAGE_FUZZ_CASES`), and collects the tally line each property prints:
//! `fuzz-tally target="..." inputs=N refused=M`.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

/// The test targets holding the fuzz properties, by package.
const TARGETS: [(&str, &str); 2] = [("linkage-node", "fuzz"), ("linkage-hub", "fuzz_sync")];

/// One property's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTally {
    pub target: String,
    pub inputs: u64,
    pub refused: u64,
}

/// What one sweep ran and what held.
#[derive(Debug, Clone, Default)]
pub struct FuzzRun {
    pub seed: u64,
    /// Cases per property, or `None` for the CI counts written in the tests.
    pub cases: Option<u32>,
    pub tallies: Vec<TargetTally>,
    /// Tests run (properties and the named inputs that once broke one) and those that failed.
    pub tests_passed: u64,
    pub failures: Vec<String>,
    pub commands: Vec<String>,
}

impl FuzzRun {
    pub fn held(&self) -> bool {
        self.failures.is_empty() && !self.tallies.is_empty()
    }

    pub fn inputs(&self) -> u64 {
        self.tallies.iter().map(|t| t.inputs).sum()
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_owned()
}

/// Runs every fuzz property with `seed` and, if given, `cases` per property.
pub async fn sweep(
    seed: u64,
    cases: Option<u32>,
    say: &mut dyn FnMut(String),
) -> anyhow::Result<FuzzRun> {
    let mut run = FuzzRun {
        seed,
        cases,
        ..FuzzRun::default()
    };
    for (package, target) in TARGETS {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .current_dir(workspace())
            .args(["test", "-p", package, "--test", target, "--", "--nocapture"])
            .env("PROPTEST_RNG_SEED", seed.to_string());
        if let Some(cases) = cases {
            command.env("LINKAGE_FUZZ_CASES", cases.to_string());
        }
        let shown = format!(
            "PROPTEST_RNG_SEED={seed}{} cargo test -p {package} --test {target}",
            cases
                .map(|c| format!(" LINKAGE_FUZZ_CASES={c}"))
                .unwrap_or_default()
        );
        say(format!("fuzz: {shown}"));
        let output = tokio::task::spawn_blocking(move || command.output())
            .await?
            .with_context(|| format!("running {shown}"))?;
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        parse(&text, &mut run);
        if !output.status.success() && run.failures.is_empty() {
            run.failures.push(format!(
                "{shown} failed ({}); see its output",
                output.status
            ));
        }
        run.commands.push(shown);
    }
    Ok(run)
}

/// Reads tally lines, passed tests and failed tests out of `cargo test` output.
fn parse(text: &str, run: &mut FuzzRun) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("fuzz-tally target=") {
            if let Some(tally) = parse_tally(rest) {
                run.tallies.push(tally);
            }
        } else if let Some(name) = line.strip_prefix("test ")
            && let Some(name) = name.strip_suffix(" ... FAILED")
        {
            run.failures.push(name.to_owned());
        } else if line.starts_with("test ") && line.ends_with(" ... ok") {
            run.tests_passed += 1;
        }
    }
}

/// `"<target>" inputs=N refused=M`
fn parse_tally(rest: &str) -> Option<TargetTally> {
    let rest = rest.strip_prefix('"')?;
    let (target, rest) = rest.split_once("\" ")?;
    let mut tally = TargetTally {
        target: target.to_owned(),
        ..TargetTally::default()
    };
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("inputs", n) => tally.inputs = n.parse().ok()?,
            ("refused", n) => tally.refused = n.parse().ok()?,
            _ => {}
        }
    }
    Some(tally)
}

pub fn render(run: &FuzzRun) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "seed (PROPTEST_RNG_SEED)           {}\ncases per property                 {}",
        run.seed,
        run.cases
            .map_or("as in CI (written in each test)".to_owned(), |c| c
                .to_string())
    );
    for tally in &run.tallies {
        let _ = writeln!(
            out,
            "  {:<48} {:>7} inputs, {:>7} refused, {:>7} accepted",
            tally.target,
            tally.inputs,
            tally.refused,
            tally.inputs - tally.refused
        );
    }
    let _ = writeln!(
        out,
        "inputs tried                       {}\ntests passed                       {} (properties, and each input that once broke one)\nfailures                           {}",
        run.inputs(),
        run.tests_passed,
        run.failures.len()
    );
    for failure in &run.failures {
        let _ = writeln!(out, "  FAILED: {failure}");
    }
    let _ = writeln!(
        out,
        "held                               {}",
        if run.held() {
            "no panic reached a caller, every refusal came with its error, nothing stored changed on a refusal, other sessions kept syncing"
        } else {
            "NO (see above)"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_lines_and_test_results_are_read_from_cargo_output() {
        let text = "\
fuzz-tally target=\"node: record bodies (JSON)\" inputs=1000 refused=893
test record_bodies_of_random_json_are_refused_naming_the_kind ... ok
test bundle_chunk_is_refused ... FAILED
fuzz-tally target=\"broken\" inputs=x
";
        let mut run = FuzzRun::default();
        parse(text, &mut run);
        assert_eq!(
            run.tallies,
            [TargetTally {
                target: "node: record bodies (JSON)".into(),
                inputs: 1000,
                refused: 893
            }]
        );
        assert_eq!(run.tests_passed, 1);
        assert_eq!(run.failures, ["bundle_chunk_is_refused"]);
    }
}
