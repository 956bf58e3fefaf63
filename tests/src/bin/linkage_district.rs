//! `linkage-district`: the README's main job. Starts a hub and a node for every organisation of
//! the Beidaihe directory, each its own process with its own RocksDB folder on loopback, plays
//! the National Day 2026 scenario through the public interfaces, prints what the hub shows
//! (through the real `linkage` client), and stops every process it started.

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use linkage_proto::v1 as pb;
use linkage_tests::bin;
use linkage_tests::scenario::{self, District, MARKET};

#[derive(Debug, Parser)]
#[command(
    name = "linkage-district",
    about = "Run a whole district on this machine and play the Beidaihe National Day 2026 scenario"
)]
struct Args {
    /// Keep data and logs in this folder (default: a temporary folder, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::Builder::new()
        .prefix("linkage-district-")
        .tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let started = Instant::now();
    let mut say = |line: String| println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());

    say(format!("starting the district in {}", root.display()));
    let district = District::start(&root, &mut say).await?;
    let result = tokio::select! {
        result = run(&district, &mut say) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = &result {
        eprintln!("district run failed: {e:#}");
        if args.dir.is_none() {
            eprintln!("pass --dir DIR to keep the data and logs for a look");
        }
    }
    drop(district);
    say("stopped every process this run started".into());
    result
}

/// Runs the `linkage` client against the hub, its output going straight to ours.
fn linkage(hub: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(bin("linkage")?)
        .arg("--hub")
        .arg(hub)
        .args(args)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "linkage {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

async fn run(district: &District, say: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let outcome = scenario::play(district, say).await?;
    district.wait_converged().await?;
    let hub = district.hub.url();

    println!("\n== Convergence: linkage status ==");
    linkage(&hub, &["status"])?;

    println!("\n== Records held on each office's node ==");
    for (name, office) in &district.offices {
        let list = office
            .records()
            .await?
            .list(pb::ListRecordsRequest::default())
            .await?
            .into_inner();
        let own = list
            .records
            .iter()
            .filter(|s| {
                s.envelope
                    .as_ref()
                    .is_some_and(|e| e.owner == office.node.org)
            })
            .count();
        println!(
            "{name:<18} {:>2} records, {own} of them its own",
            list.records.len()
        );
    }
    println!("\n== Records on the hub per office: linkage counts ==");
    linkage(&hub, &["counts"])?;

    let token = outcome.feed_token_before_holiday.to_string();
    println!(
        "\n== Feed: Market Supervision's case system resumes category 3 from token {token} =="
    );
    linkage(
        &hub,
        &[
            "feed",
            "--org",
            MARKET,
            "--categories",
            "3",
            "--token",
            &token,
        ],
    )?;

    println!("\n== Obligations at Mon 12 Oct 2026 18:00: linkage obligations --district ==");
    linkage(
        &hub,
        &[
            "obligations",
            "--district",
            "--org",
            "all",
            "--all-states",
            "--at",
            "2026-10-12 18:00",
        ],
    )?;

    println!("\n== Accountability, September and October 2026: linkage report --district ==");
    linkage(
        &hub,
        &[
            "report",
            "--district",
            "--org",
            "all",
            "--from",
            "2026-09-01 00:00",
            "--to",
            "2026-10-31 24:00",
            "--at",
            "2026-10-12 18:00",
        ],
    )?;

    println!("\n== The Emergency Management Bureau's two offline edits ==");
    for c in &outcome.notice_after_offline_edits.conflicts {
        println!("conflict kept at {}: {}", c.path, c.values.join(" | "));
    }
    println!("body: {}", outcome.notice_after_offline_edits.body_json);
    println!(
        "\ndispute {} ends the week at stage {}",
        outcome.dispute, outcome.dispute_final.status
    );
    Ok(())
}
