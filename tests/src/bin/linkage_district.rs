//! `linkage-district`: the README's main job. Starts a hub and a node for every organisation of
//! the Beidaihe directory, each its own process with its own RocksDB folder on loopback, plays
//! the National Day 2026 scenario through the public interfaces, prints what the hub shows, and
//! stops every process it started.

use std::time::Instant;

use clap::Parser;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use linkage_node::calendar;
use linkage_proto::v1 as pb;
use linkage_tests::scenario::{self, District};

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

fn when(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    calendar::from_unix_millis(ms)
        .map(calendar::format_instant)
        .unwrap_or_default()
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.iter().copied());
    t
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
        eprintln!("logs are in {} (pass --dir to keep them)", root.display());
    }
    drop(district);
    say("stopped every process this run started".into());
    result
}

async fn run(district: &District, say: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let outcome = scenario::play(district, say).await?;
    let report = district.wait_converged().await?;

    println!("\n== Convergence (what the hub shows) ==");
    println!(
        "district converged: {} — {} records on the hub",
        if report.converged {
            "yes 已收敛"
        } else {
            "NO"
        },
        report.records
    );
    let mut t = table(&[
        "org",
        "node",
        "link",
        "last contact",
        "to node",
        "from node",
        "heads ≠",
        "state",
    ]);
    for n in &report.nodes {
        t.add_row(vec![
            n.org.clone(),
            n.node_id.chars().take(8).collect(),
            if n.connected {
                "online".into()
            } else {
                "offline".to_string()
            },
            when(n.last_contact_ms),
            n.pending_to_node.to_string(),
            n.pending_from_node.to_string(),
            n.heads_mismatch.to_string(),
            if n.converged {
                "converged".into()
            } else {
                "behind".to_string()
            },
        ]);
    }
    println!("{t}");

    println!("\n== Records per office (held on each node) ==");
    let mut t = table(&["office", "records held", "of which own"]);
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
        t.add_row(vec![
            name.clone(),
            list.records.len().to_string(),
            own.to_string(),
        ]);
    }
    println!("{t}");

    println!(
        "\n== Feed deliveries (Market Supervision's case system, category 3, resumed from token {}) ==",
        outcome.feed_token_before_holiday
    );
    for event in &outcome.feed_deliveries {
        let record = event.record.clone().unwrap_or_default();
        let e = record.envelope.unwrap_or_default();
        println!(
            "token {:>4}  {}  {}  status {}",
            event.token, e.id, e.owner, record.status
        );
    }

    println!("\n== Obligations at Mon 12 Oct 2026 18:00 (district view) ==");
    let mut t = table(&["rule", "duty", "owner", "due", "state", "record"]);
    for o in &outcome.obligations_12_oct.obligations {
        let due = if o.provisional {
            format!("{} (provisional)", when(o.due_ms))
        } else {
            when(o.due_ms)
        };
        t.add_row(vec![
            o.rule.clone(),
            o.duty.clone(),
            o.owner.clone(),
            due,
            o.state.clone(),
            o.record_id.clone(),
        ]);
    }
    println!("{t}");

    println!("\n== The Emergency Management Bureau's two offline edits ==");
    for c in &outcome.notice_after_offline_edits.conflicts {
        println!("conflict at {}: {}", c.path, c.values.join(" | "));
    }
    println!("body: {}", outcome.notice_after_offline_edits.body_json);
    println!(
        "\ndispute {} ends the week at stage {}",
        outcome.dispute, outcome.dispute_final.status
    );
    Ok(())
}
