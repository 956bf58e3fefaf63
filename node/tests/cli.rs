//! The `linkage` command line against the real `linkage-node` binary: scenario events 1 and 2
//! recorded by hand, `--json` output that parses, input errors caught before the node is
//! contacted, the calendar check, due times by a configured `[periods]` table, and a reader
//! that goes away early.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use common::NodeBinary;
use serde_json::{Value, json};
use tempfile::TempDir;

const HAIBIN: &str = "130304100";
const HAIBIN_TEAM: &str = "130304100-zhzfd";
const DAIHE: &str = "130304101";
const MARKET: &str = "bdh-scjg";

fn bj(text: &str) -> i64 {
    linkage_node::calendar::parse_instant(text)
        .expect("a Beijing time")
        .timestamp_millis()
}

/// Runs `linkage --node URL ARGS...`, feeding `stdin` if given.
fn linkage(node: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["--node", node];
    all.extend(args);
    run(&all, stdin)
}

/// Runs `linkage ARGS...`, feeding `stdin` if given.
fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkage"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .expect("linkage reads its standard input");
    }
    child.wait_with_output().expect("linkage runs to the end")
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "linkage failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("output is UTF-8")
}

fn parsed(output: &Output) -> Value {
    let text = succeeded(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json printed non-JSON ({e}):\n{text}"))
}

/// Expects exit code 1 with nothing on stdout; returns stderr.
fn failed(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1: {output:?}"
    );
    assert!(output.stdout.is_empty(), "{output:?}");
    String::from_utf8(output.stderr.clone()).expect("errors are UTF-8")
}

fn transfer_body(sender: &str) -> Value {
    json!({
        "sender": sender,
        "receiver": MARKET,
        "title": "销售过期食品 stall selling food past its use-by date",
        "matter": "food safety",
        "place": "海滨镇 market street stall",
        "facts": "The stall offered packaged food past its use-by date.",
        "discovered_at_ms": bj("2026-09-28 10:20"),
        "materials": [
            {"kind": "transfer_letter", "name": "移送函 transfer letter.pdf"},
            {"kind": "case_source", "name": "现场检查笔录 on-site inspection record.pdf"},
            {"kind": "evidence", "name": "photo-1.jpg"},
            {"kind": "evidence", "name": "photo-2.jpg"},
        ],
    })
}

/// Scenario event 1: the enforcement team's attempt in its own name is refused by T-4, then
/// Haibin Town sends the transfer at 11:05, meeting its T-1 deadline of 8 Oct 24:00.
#[test]
fn scenario_event_1_haibin_transfers_after_a_refused_t4_attempt() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let url = node.url();

    let team_body = transfer_body(HAIBIN_TEAM).to_string();
    let refused = linkage(
        &url,
        &[
            "create",
            "transfer",
            "--body",
            &team_body,
            "--parties",
            MARKET,
            "--at",
            "2026-09-28 10:40",
        ],
        None,
    );
    let stderr = failed(&refused);
    assert!(stderr.contains("T-4"), "names the rule: {stderr}");
    assert!(
        stderr.contains("海滨镇人民政府 Haibin Town (130304100) may"),
        "says who may send it: {stderr}"
    );
    assert!(stderr.contains("FailedPrecondition"), "{stderr}");

    let body_file = folder.path().join("transfer.json");
    std::fs::write(&body_file, transfer_body(HAIBIN).to_string()).unwrap();
    let body_arg = format!("@{}", body_file.display());
    let sent = parsed(&linkage(
        &url,
        &[
            "--json",
            "create",
            "transfer",
            "--body",
            &body_arg,
            "--parties",
            MARKET,
            "--at",
            "2026-09-28 11:05",
            "--unit",
            HAIBIN_TEAM,
            "--person",
            "张三 Zhang",
            "--note",
            "移送函、现场检查笔录及照片两张 letter, inspection record, two photos",
        ],
        None,
    ));
    assert_eq!(sent["status"], "awaiting_receipt");
    assert_eq!(sent["body"]["sender"], HAIBIN);
    assert_eq!(sent["body"]["materials"].as_array().unwrap().len(), 4);
    assert_eq!(sent["envelope"]["parties"], json!([HAIBIN, MARKET]));
    assert_eq!(sent["events"][0]["action"], "sent");
    assert_eq!(sent["events"][0]["unit"], HAIBIN_TEAM);
    assert_eq!(sent["events"][0]["at_ms"], bj("2026-09-28 11:05"));
    let id = sent["envelope"]["id"].as_str().unwrap().to_owned();

    let obligations = parsed(&linkage(
        &url,
        &[
            "--json",
            "obligations",
            "--at",
            "2026-09-28 12:00",
            "--all-states",
        ],
        None,
    ));
    let transfer_duty = obligations["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["record_id"] == id.as_str() && o["rule"] == "T-1")
        .unwrap_or_else(|| panic!("no T-1 obligation: {obligations}"));
    assert_eq!(transfer_duty["due_ms"], bj("2026-10-08 24:00"));
    assert_eq!(transfer_duty["met_at_ms"], bj("2026-09-28 11:05"));

    let listed = parsed(&linkage(
        &url,
        &["--json", "list", "--kind", "transfer"],
        None,
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["envelope"]["id"], id.as_str());
    let table = succeeded(&linkage(&url, &["list"], None));
    assert!(
        table.contains(&id) && table.contains("1 record(s)"),
        "{table}"
    );
    let history = parsed(&linkage(&url, &["--json", "history", &id], None));
    assert_eq!(history[0]["org"], HAIBIN);
    let got = parsed(&linkage(&url, &["--json", "get", &id], None));
    assert_eq!(got, sent, "get shows what create returned");
    let info = parsed(&linkage(&url, &["--json", "info"], None));
    assert_eq!(
        (info["org"].as_str(), info["records"].as_u64()),
        (Some(HAIBIN), Some(1))
    );
}

/// Scenario event 2: market supervision registers a phone complaint about a matter devolved to
/// Daihe Town and notifies the town in writing (C-3).
#[test]
fn scenario_event_2_market_supervision_registers_and_forwards_a_complaint_c3() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(MARKET, folder.path());
    let url = node.url();
    let complaint = json!({
        "received_by": MARKET,
        "handler": DAIHE,
        "channel": "phone",
        "subject": "占道经营 shop occupying the pavement",
        "place": "戴河镇 main road",
        "received_at_ms": bj("2026-09-28 15:00"),
        "complainant": {"name": "王某 Wang", "phone": "13800000000"},
    });

    let registered = parsed(&linkage(
        &url,
        &[
            "--json",
            "create",
            "complaint",
            "--body",
            "-",
            "--at",
            "2026-09-28 15:00",
        ],
        Some(&complaint.to_string()),
    ));
    assert_eq!(registered["status"], "registered");
    assert_eq!(registered["envelope"]["parties"], json!([MARKET, DAIHE]));
    assert_eq!(registered["body"]["complainant"]["phone"], "13800000000");
    let id = registered["envelope"]["id"].as_str().unwrap().to_owned();

    let forwarded = parsed(&linkage(
        &url,
        &[
            "--json",
            "event",
            &id,
            "forwarded",
            "--at",
            "2026-09-28 15:10",
            "--note",
            "已告知投诉人向戴河镇反映并书面通知戴河镇 complainant told; Daihe Town notified in writing",
        ],
        None,
    ));
    assert_eq!(forwarded["status"], "forwarded");
    assert_eq!(forwarded["events"][1]["action"], "forwarded");
    assert_eq!(forwarded["events"][1]["org"], MARKET);

    let by_township = failed(&linkage(
        &url,
        &["event", &id, "accepted", "--at", "2026-09-28 15:20"],
        None,
    ));
    assert!(by_township.contains("C-2"), "{by_township}");
    let unknown = failed(&linkage(&url, &["event", &id, "teleported"], None));
    assert!(
        unknown.contains("teleported") && unknown.contains("InvalidArgument"),
        "{unknown}"
    );
}

/// A typo in `--body` is caught by the CLI: the node (here a listener nobody serves) is never
/// contacted.
#[test]
fn invalid_json_on_body_is_refused_without_contacting_the_node() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());

    let stderr = failed(&linkage(
        &url,
        &["create", "case", "--body", "{\"title\": \"unclosed\""],
        None,
    ));
    assert!(
        stderr.starts_with("error: 输入有误 invalid input: invalid JSON"),
        "{stderr}"
    );
    let stderr = failed(&linkage(
        &url,
        &["edit", "CA-0000000000000000", "--patch", "title=x"],
        None,
    ));
    assert!(
        stderr.starts_with("error: 输入有误 invalid input: invalid JSON"),
        "{stderr}"
    );

    let stderr = failed(&linkage(
        &url,
        &[
            "create",
            "case",
            "--body",
            "@/nonexistent/linkage-body.json",
        ],
        None,
    ));
    assert!(
        stderr.starts_with("error: 文件读写失败 file error: could not read"),
        "{stderr}"
    );

    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected to the node: {other:?}"),
    }
}

/// A token file that could not be kept (a folder, or in a folder that does not exist) is
/// refused before the hub is contacted: found after the first delivery, the next run would
/// start over or skip what this one printed.
#[test]
fn a_feed_token_file_that_cannot_be_kept_is_refused_before_contacting_the_hub() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let feed = |token_file: &std::path::Path| {
        let path = token_file.display().to_string();
        let args = [
            "--hub",
            &url,
            "feed",
            "--org",
            MARKET,
            "--token-file",
            &path,
        ];
        failed(&run(&args, None))
    };

    let stderr = feed(dir.path());
    assert!(
        stderr.starts_with("error: 文件读写失败 file error: could not read token file"),
        "{stderr}"
    );
    let missing_folder = dir.path().join("nowhere").join("token.txt");
    let stderr = feed(&missing_folder);
    assert!(
        stderr.starts_with("error: 文件读写失败 file error: token file")
            && stderr.contains("does not exist"),
        "{stderr}"
    );

    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected to the hub: {other:?}"),
    }
}

#[test]
fn calendar_due_3wd_from_the_scenarios_discovery_is_8_october_24_00() {
    let args = [
        "calendar",
        "due",
        "--from",
        "2026-09-28 10:20",
        "--period",
        "3wd",
    ];
    let text = succeeded(&run(&args, None));
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["due", "2026-10-08", "24:00", "+08:00"]),
        "{text}"
    );
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let due = parsed(&run(&json_args, None));
    assert_eq!(due["due"], "2026-10-08 24:00 +08:00");
    assert_eq!(due["provisional"], false);
}

/// A year before the embedded calendar was published long ago; it is out of range, not
/// "not yet published" (a reviewer's finding).
#[test]
fn calendar_day_says_why_a_day_is_provisional() {
    let before = succeeded(&run(&["calendar", "day", "2020-10-01"], None));
    assert!(before.contains("outside the calendar's range"), "{before}");
    assert!(!before.contains("not yet published"), "{before}");
    let unpublished = succeeded(&run(&["calendar", "day", "2027-10-01"], None));
    assert!(unpublished.contains("not yet published"), "{unpublished}");
    let official = succeeded(&run(&["calendar", "day", "2026-10-01"], None));
    assert!(!official.contains("provisional"), "{official}");
}

#[test]
fn calendar_due_by_an_offices_own_end_of_day_and_at_once() {
    let due = |extra: &[&str]| {
        let mut args = vec!["--json", "calendar", "due", "--from", "2026-09-28 10:20"];
        args.extend(extra);
        parsed(&run(&args, None))
    };
    let wd = due(&["--period", "3wd", "--end-of-day", "17:30"]);
    assert_eq!(wd["due"], "2026-10-08 17:30 +08:00");
    assert_eq!(
        (wd["end_of_day"].as_str(), wd["at_once"].as_str()),
        (Some("17:30"), Some("2h"))
    );
    // Discovered after the office closed: the same day still runs to midnight.
    let same_day = parsed(&run(
        &[
            "--json",
            "calendar",
            "due",
            "--from",
            "2026-09-28 18:00",
            "--period",
            "same-day",
            "--end-of-day",
            "17:30",
        ],
        None,
    ));
    assert_eq!(same_day["due"], "2026-09-28 24:00 +08:00");
    let at_once = due(&["--period", "at-once", "--at-once", "1h"]);
    assert_eq!(at_once["due"], "2026-09-28 11:20 +08:00");

    let table = succeeded(&run(
        &[
            "calendar",
            "due",
            "--from",
            "2026-09-28 10:20",
            "--period",
            "3wd",
            "--end-of-day",
            "17:30",
        ],
        None,
    ));
    assert!(table.contains("end of day 17:30"), "{table}");

    let stderr = failed(&run(
        &[
            "calendar",
            "due",
            "--from",
            "2026-09-28 10:20",
            "--period",
            "3wd",
            "--end-of-day",
            "5pm",
        ],
        None,
    ));
    assert!(stderr.contains("\"5pm\" is not an end of day"), "{stderr}");
    let stderr = failed(&run(
        &[
            "calendar",
            "due",
            "--from",
            "2026-09-28 10:20",
            "--period",
            "at-once",
            "--at-once",
            "2 hours",
        ],
        None,
    ));
    assert!(stderr.contains("\"2 hours\" is not a delay"), "{stderr}");
}

/// A node whose TOML sets the district's "at once" to 1 hour and Haibin's end of day to 17:30
/// answers `linkage obligations` with those due times; the Market Supervision Bureau's
/// receipt keeps the district's 24:00.
#[test]
fn obligations_follow_the_nodes_periods_table() {
    let folder = TempDir::new().unwrap();
    let config = folder.path().join("node.toml");
    std::fs::write(
        &config,
        "[periods]\nat_once = \"1h\"\nend_of_day = \"24:00\"\n\
         [periods.organisations.130304100]\nend_of_day = \"17:30\"\n",
    )
    .unwrap();
    let node = NodeBinary::start_with_args(
        HAIBIN,
        folder.path(),
        &["--config".as_ref(), config.as_os_str()],
    );
    let url = node.url();

    let mut body = transfer_body(HAIBIN);
    body["ongoing"] = json!(true);
    let sent = parsed(&linkage(
        &url,
        &[
            "--json",
            "create",
            "transfer",
            "--body",
            &body.to_string(),
            "--parties",
            MARKET,
            "--at",
            "2026-09-28 11:30",
        ],
        None,
    ));
    let id = sent["envelope"]["id"].as_str().unwrap().to_owned();

    let answer = parsed(&linkage(
        &url,
        &[
            "--json",
            "obligations",
            "--org",
            "all",
            "--all-states",
            "--at",
            "2026-09-28 12:00",
        ],
        None,
    ));
    let mut found: Vec<(String, String, i64, String)> = answer["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["record_id"] == id.as_str())
        .map(|o| {
            (
                o["rule"].as_str().unwrap().to_owned(),
                o["owner"].as_str().unwrap().to_owned(),
                o["due_ms"].as_i64().unwrap(),
                o["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let row = |rule: &str, owner: &str, due: &str, state: &str| {
        (rule.to_owned(), owner.to_owned(), bj(due), state.to_owned())
    };
    assert_eq!(
        found,
        [
            row("T-1", HAIBIN, "2026-10-08 17:30", "met"),
            // Discovered 10:20, sent 11:30: on time by the default 2 hours, late by the
            // configured hour.
            row("T-2", HAIBIN, "2026-09-28 11:20", "met_late"),
            row("T-5", MARKET, "2026-10-08 24:00", "open"),
        ],
        "{answer}"
    );
}

/// `linkage list | head -0`: the reader is gone before the CLI writes. The CLI must end
/// quietly, not panic on EPIPE as `println!` does.
#[test]
fn a_closed_stdout_ends_the_cli_quietly_without_a_panic() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    for args in [
        vec!["list"],
        vec!["--json", "info"],
        vec![
            "calendar",
            "due",
            "--from",
            "2026-09-28 10:20",
            "--period",
            "3wd",
        ],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_linkage"))
            .arg("--node")
            .arg(node.url())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("linkage runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked"),
            "`linkage {}` panicked on a closed stdout: {stderr}",
            args.join(" ")
        );
        assert!(
            output.status.success(),
            "`linkage {}` should end quietly: {:?} {stderr}",
            args.join(" "),
            output.status
        );
    }
}

/// The README's transfer example, the exact text from the README run by `sh` with `linkage`
/// on the PATH and the test node's URL for the README's: `discovered_at_ms` written as
/// "2026-09-28 10:20" arrives as Unix milliseconds.
#[test]
fn the_readmes_transfer_example_runs_with_an_instant_in_discovered_at_ms() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("linkage --node http://127.0.0.1:7401 create transfer")
        .expect("the README shows the transfer example");
    let end = start
        + readme[start..]
            .find("}]}'")
            .expect("the example's body ends")
        + 4;
    let example = &readme[start..end];
    assert!(
        example.contains(r#""discovered_at_ms": "2026-09-28 10:20""#),
        "{example}"
    );

    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let command = example.replace("http://127.0.0.1:7401", &node.url());
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_linkage"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .args(["-c", &command])
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    let table = succeeded(&output);
    assert!(table.contains("TR-"), "{table}");

    let listed = parsed(&linkage(
        &node.url(),
        &["--json", "list", "--kind", "transfer"],
        None,
    ));
    let id = listed[0]["envelope"]["id"].as_str().unwrap().to_owned();
    let record = parsed(&linkage(&node.url(), &["--json", "get", &id], None));
    assert_eq!(
        record["body"]["discovered_at_ms"],
        bj("2026-09-28 10:20"),
        "{record}"
    );
    assert_eq!(record["events"][0]["at_ms"], bj("2026-09-28 11:05"));
}

/// Runs `linkage --node URL ARGS...` against a node that never answers: a CLI that sends
/// anything would wait forever, so it is killed after a while and the test fails.
fn linkage_unanswered(node: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkage"))
        .args(["--node", node])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("the child can be polled").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`linkage {}` sent its request to the node", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("linkage's output is read")
}

/// `*_at_ms` fields of `--body` and `--patch` take instants; integers pass unchanged, and a
/// string that is not an instant is refused naming the field and the value, before the node
/// (here a listener nobody serves) is contacted.
#[test]
fn instants_in_at_ms_fields_become_milliseconds_and_bad_ones_are_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    let stderr = failed(&linkage_unanswered(
        &dead,
        &[
            "create",
            "case",
            "--body",
            r#"{"title": "t", "found_at_ms": "2026-09-28 25:00"}"#,
        ],
    ));
    assert!(
        stderr.contains("--body field found_at_ms")
            && stderr.contains("\"2026-09-28 25:00\" is not an instant"),
        "{stderr}"
    );
    let stderr = failed(&linkage_unanswered(
        &dead,
        &[
            "edit",
            "CA-0000000000000000",
            "--patch",
            r#"{"found_at_ms": "yesterday"}"#,
        ],
    ));
    assert!(
        stderr.contains("--patch field found_at_ms") && stderr.contains("\"yesterday\""),
        "{stderr}"
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected to the node: {other:?}"),
    }

    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let url = node.url();
    let case = json!({
        "title": "海滨镇 case", "matter": "food safety", "facts": "a stall",
        "found_at_ms": bj("2026-09-27 09:00"),
    });
    let created = parsed(&linkage(
        &url,
        &["--json", "create", "case", "--body", &case.to_string()],
        None,
    ));
    assert_eq!(created["body"]["found_at_ms"], bj("2026-09-27 09:00"));
    let id = created["envelope"]["id"].as_str().unwrap().to_owned();
    let edited = parsed(&linkage(
        &url,
        &[
            "--json",
            "edit",
            &id,
            "--patch",
            r#"{"found_at_ms": "2026-09-28T08:30:00+08:00", "place": "market street"}"#,
        ],
        None,
    ));
    assert_eq!(edited["body"]["found_at_ms"], bj("2026-09-28 08:30"));
    assert_eq!(edited["body"]["place"], "market street");
}

/// An organisation the node's directory does not know is refused by name, for obligations and
/// the report alike; `all` (lower case, as documented) and a known id still answer.
#[test]
fn obligations_and_report_refuse_an_unknown_organisation_by_name() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let url = node.url();
    let period = ["--from", "2026-09-01 00:00", "--to", "2026-10-31 24:00"];
    for (args, named) in [
        (vec!["obligations", "--org", "nope"], "\"nope\""),
        (vec!["obligations", "--org", "ALL"], "\"ALL\""),
        (vec!["report", "--org", "nope"], "\"nope\""),
        (vec!["obligations", "--org", HAIBIN_TEAM], HAIBIN_TEAM),
    ] {
        let mut all = args.clone();
        if args[0] == "report" {
            all.extend(period);
        }
        let stderr = failed(&linkage(&url, &all, None));
        assert!(
            stderr.contains(&format!("organisation {named}"))
                || stderr.contains(&format!("organisation \"{named}\"")),
            "`linkage {}` should name the organisation: {stderr}",
            all.join(" ")
        );
        assert!(stderr.contains("InvalidArgument"), "{stderr}");
    }
    let stderr = failed(&linkage(&url, &["obligations", "--org", "ALL"], None));
    assert!(stderr.contains("\"all\", in lower case"), "{stderr}");

    for org in ["all", HAIBIN, MARKET] {
        parsed(&linkage(
            &url,
            &["--json", "obligations", "--org", org],
            None,
        ));
        let mut args = vec!["--json", "report", "--org", org];
        args.extend(period);
        parsed(&linkage(&url, &args, None));
    }
}

/// The obligations table shows each state's Chinese and English label; `--json` keeps the
/// codes scripts match on.
#[test]
fn the_obligations_table_shows_bilingual_states_and_json_keeps_codes() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let url = node.url();
    linkage(
        &url,
        &[
            "create",
            "transfer",
            "--body",
            &transfer_body(HAIBIN).to_string(),
            "--parties",
            MARKET,
            "--at",
            "2026-09-28 11:05",
        ],
        None,
    );
    let at = ["--org", "all", "--all-states", "--at", "2026-10-12 12:00"];
    let mut args = vec!["obligations"];
    args.extend(at);
    let table = succeeded(&linkage(&url, &args, None));
    // T-1 met on 28 September; T-5's receipt, due 8 October, never came.
    assert!(
        table.contains("按时履行 met") && table.contains("已逾期 overdue"),
        "{table}"
    );
    let mut json_args = vec!["--json", "obligations"];
    json_args.extend(at);
    let answer = parsed(&linkage(&url, &json_args, None));
    let states: Vec<&str> = answer["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"met") && states.contains(&"overdue"),
        "{answer}"
    );
}

/// `--period` takes hours written as minutes, as `--at-once` does, when they come to whole
/// hours; anything else is refused saying why.
#[test]
fn calendar_due_period_takes_whole_hours_written_in_minutes() {
    let due = |period: &str| {
        run(
            &[
                "--json",
                "calendar",
                "due",
                "--from",
                "2026-09-28 10:20",
                "--period",
                period,
            ],
            None,
        )
    };
    for period in ["2h", "120m", "1h60m", "2H"] {
        let answer = parsed(&due(period));
        assert_eq!(answer["period"], "2h", "{period}: {answer}");
        assert_eq!(answer["due"], "2026-09-28 12:20 +08:00", "{period}");
    }
    for period in ["90m", "1h30m"] {
        let stderr = failed(&due(period));
        assert!(
            stderr.contains(&format!(
                "--period {period:?} is not a whole number of hours"
            )),
            "{stderr}"
        );
    }
    let stderr = failed(&due("0m"));
    assert!(stderr.contains("at least 1h"), "{stderr}");
    let stderr = failed(&due("2 hours"));
    assert!(stderr.contains("\"2 hours\" is not a period"), "{stderr}");
}

/// Help text: every flag and argument people type says what it is for, and every command a help line names
/// exists: in a quoted `linkage COMMAND ...`, and in the commands `--hub` says it serves.
#[test]
fn help_explains_every_flag_and_names_only_real_commands() {
    let commands = [
        "create",
        "get",
        "list",
        "event",
        "edit",
        "add-parties",
        "history",
        "obligations",
        "report",
        "ca",
        "calendar",
        "info",
        "rejections",
        "status",
        "counts",
        "feed",
        "forget-node",
    ];
    let help = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--help");
        succeeded(&run(&all, None))
    };
    let mut pages = vec![help(&[])];
    for command in commands {
        pages.push(help(&[command]));
    }
    pages.push(help(&["calendar", "due"]));
    pages.push(help(&["ca", "init"]));
    pages.push(help(&["ca", "issue"]));
    for page in &pages {
        for line in page.lines() {
            let hub_line = line.trim_start().starts_with("--hub ");
            for quoted in line.split('`').skip(1).step_by(2) {
                let mut words = quoted.split_whitespace();
                let command = match words.next() {
                    Some("linkage") => words.next(),
                    Some(word) if hub_line && !word.starts_with('-') => Some(word),
                    _ => None,
                };
                if let Some(command) = command {
                    assert!(
                        commands.contains(&command),
                        "help names a command `{command}` that does not exist: {line}"
                    );
                }
            }
            let flag = line.trim_start();
            if flag.starts_with("--") && !flag.starts_with("--help") {
                let words: Vec<&str> = flag.split_whitespace().collect();
                let described = words.len() > 2 || (words.len() == 2 && !words[1].starts_with('<'));
                assert!(described, "flag without help: {line}\n{page}");
            }
            if flag.starts_with('<') {
                assert!(
                    flag.split_whitespace().count() > 1,
                    "argument without help: {line}\n{page}"
                );
            }
        }
    }
}

/// `linkage watch` prints a header, then one line per change; when the node goes away it
/// fails saying how far it got and how to resume from there.
#[test]
fn watch_names_the_position_to_resume_from_when_the_node_goes_away() {
    use std::io::{BufRead, BufReader};

    let folder = TempDir::new().unwrap();
    let mut node = NodeBinary::start(HAIBIN, folder.path());
    let url = node.url();
    let notice = r#"{"category": 1, "title": "t", "content": "c", "formed_at_ms": 1790000000000, "related_record": ""}"#;
    for _ in 0..2 {
        succeeded(&linkage(
            &url,
            &["create", "shared_info", "--body", notice],
            None,
        ));
    }

    let mut watch = Command::new(env!("CARGO_BIN_EXE_linkage"))
        .args(["--node", &url, "watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage watch starts");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout is piped")).lines();
    let header = lines.next().expect("a header").unwrap();
    assert!(
        header.contains("位置 position") && header.contains("标题 title"),
        "{header}"
    );
    let mut last = String::new();
    for _ in 0..2 {
        last = lines.next().expect("a record line").unwrap();
    }
    let position = last
        .split_whitespace()
        .next()
        .expect("a position")
        .to_owned();
    assert!(position.parse::<u64>().is_ok(), "{last}");

    node.kill9();
    let output = watch.wait_with_output().expect("linkage watch ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("resume with `linkage watch --after {position}`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("已显示至位置 {position}")),
        "{stderr}"
    );
    assert!(stderr.contains("连接中断 connection lost"), "{stderr}");
}

/// A command sent to the wrong kind of server is told so, not answered with an empty error.
#[test]
fn a_hub_command_sent_to_a_node_says_which_server_to_name() {
    let folder = TempDir::new().unwrap();
    let node = NodeBinary::start(HAIBIN, folder.path());
    let stderr = failed(&run(&["--hub", &node.url(), "status"], None));
    assert!(
        stderr.contains("该服务器不提供此命令 this server does not offer this command"),
        "{stderr}"
    );
    assert!(stderr.contains("--hub the hub"), "{stderr}");
}

/// An address without http:// (or with another scheme) is named as the fault, not left to
/// fail as a bare transport error.
#[test]
fn an_address_without_its_scheme_is_named() {
    for (address, suggested) in [
        ("127.0.0.1:7401", "http://127.0.0.1:7401"),
        ("ftp://127.0.0.1:7401", "http://127.0.0.1:7401"),
    ] {
        let stderr = failed(&run(&["--node", address, "list"], None));
        assert!(stderr.contains("地址有误 bad address"), "{stderr}");
        assert!(
            stderr.contains("must start with http:// or https://"),
            "{stderr}"
        );
        assert!(stderr.contains(suggested), "{stderr}");
    }
}

/// An address whose port is no port (past 65535, or 0) is named as the fault too.
#[test]
fn an_address_whose_port_is_out_of_range_is_named() {
    for port in ["99999", "0"] {
        let address = format!("http://127.0.0.1:{port}");
        let stderr = failed(&run(&["--node", &address, "list"], None));
        assert!(stderr.contains("地址有误 bad address"), "{stderr}");
        assert!(
            stderr.contains(&format!("names port {port}; a port is 1 to 65535")),
            "{stderr}"
        );
    }
}

/// What a day is, said in Chinese and English as staff read it (the status was a Rust name).
#[test]
fn calendar_day_names_the_kind_of_day_in_chinese_and_english() {
    let make_up = succeeded(&run(&["calendar", "day", "2026-10-10"], None));
    assert!(
        make_up.contains("工作日 working day") && make_up.contains("调休上班 make-up working day"),
        "{make_up}"
    );
    let holiday = succeeded(&run(&["calendar", "day", "2026-10-02"], None));
    assert!(
        holiday.contains("休息日 rest day") && holiday.contains("放假 holiday"),
        "{holiday}"
    );
    assert!(!make_up.contains("MakeUpWorkday") && !holiday.contains("Holiday)"));
}
