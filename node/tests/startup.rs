//! Start-up refusals of the real `linkage-node` binary: a data folder another organisation's
//! node wrote, a hub address that is not a URL, a listen address already taken, a bad config
//! file. Each must stop the node at once with one message naming the offending value.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::NodeBinary;
use tempfile::TempDir;

const HAIBIN: &str = "130304100";
const MARKET: &str = "bdh-scjg";

/// How long a refusing node may take to exit; it opens at most a store first.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `linkage-node ARGS...` and expects it to exit by itself; a node still running after
/// [`EXIT_TIMEOUT`] did not refuse, and is killed.
fn node_exits(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkage-node"))
        .args(args)
        // A backtrace or cause chain, when enabled, must still not repeat the message.
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage-node starts");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while child.try_wait().expect("the child can be polled").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("the killed node is reaped");
            panic!(
                "linkage-node {args:?} kept running instead of refusing to start:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the node's output is read")
}

fn stderr_of(output: &Output) -> String {
    assert!(!output.status.success(), "the node started: {output:?}");
    String::from_utf8(output.stderr.clone()).expect("errors are UTF-8")
}

/// `message` appears once in `stderr`, and nothing repeats it as a cause.
fn said_once(stderr: &str, message: &str) {
    assert_eq!(
        stderr.matches(message).count(),
        1,
        "{message:?} should be printed once:\n{stderr}"
    );
    assert!(
        !stderr.contains("Caused by") && !stderr.contains("Stack backtrace"),
        "{stderr}"
    );
}

fn os(text: &str) -> &std::ffi::OsStr {
    text.as_ref()
}

fn node_args<'a>(org: &'a str, store: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    vec![
        os("--org"),
        os(org),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        store.as_os_str(),
    ]
}

/// Haibin Town's node writes a record; the same folder started as the Market Supervision
/// Bureau must be refused before it serves Haibin's records as the bureau's. Haibin's node
/// still opens it afterwards, record and all.
#[test]
fn a_data_folder_written_by_another_organisation_is_refused_naming_both_and_the_folder() {
    let folder = TempDir::new().unwrap();
    let store = folder.path().join("store");
    let mut haibin = NodeBinary::start(HAIBIN, folder.path());
    let created = Command::new(env!("CARGO_BIN_EXE_linkage"))
        .args(["--node", &haibin.url(), "create", "case", "--body"])
        .arg(r#"{"title": "海滨镇 case", "matter": "food safety", "facts": "a stall"}"#)
        .output()
        .expect("linkage runs");
    assert!(created.status.success(), "{created:?}");
    haibin.kill9();

    let stderr = stderr_of(&node_exits(&node_args(MARKET, &store)));
    let folder_name = store.display().to_string();
    assert!(
        stderr.contains(HAIBIN) && stderr.contains(MARKET) && stderr.contains(&folder_name),
        "names both organisations and the folder: {stderr}"
    );
    said_once(&stderr, &folder_name);

    let haibin = NodeBinary::start(HAIBIN, folder.path());
    let listed = Command::new(env!("CARGO_BIN_EXE_linkage"))
        .args(["--node", &haibin.url(), "--json", "list"])
        .output()
        .expect("linkage runs");
    let records: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    assert_eq!(records[0]["envelope"]["owner"], HAIBIN);
}

#[test]
fn a_hub_address_that_is_not_a_url_stops_start_up_naming_it() {
    let folder = TempDir::new().unwrap();
    let store = folder.path().join("store");
    for bad in ["not a url", "127.0.0.1:7400", "ftp://127.0.0.1:7400"] {
        let mut args = node_args(HAIBIN, &store);
        args.extend([os("--hub"), os(bad)]);
        let output = node_exits(&args);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = stderr_of(&output);
        said_once(&stderr, &format!("{bad:?}"));
    }
}

#[test]
fn a_listen_address_in_use_is_named_in_one_message() {
    let folder = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let store = folder.path().join("store");
    let output = node_exits(&[
        os("--org"),
        os(HAIBIN),
        os("--listen"),
        os(&addr),
        os("--data-dir"),
        store.as_os_str(),
    ]);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "names the address: {stderr}"
    );
    said_once(&stderr, "Address already in use");
    assert!(
        !store.exists(),
        "a node that cannot listen made its data folder, which now belongs to {HAIBIN}"
    );
}

#[test]
fn a_bad_config_file_is_reported_once() {
    let folder = TempDir::new().unwrap();
    let config = folder.path().join("node.toml");
    std::fs::write(
        &config,
        "org = \"130304100\"\ndata_dir = \"unused\"\n[periods]\nat_once = \"2 hours\"\n",
    )
    .unwrap();
    let output = node_exits(&[os("--config"), config.as_os_str()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("periods.at_once"), "{stderr}");
    said_once(&stderr, "\"2 hours\" is not a delay");

    let missing = folder.path().join("missing.toml");
    let stderr = stderr_of(&node_exits(&[os("--config"), missing.as_os_str()]));
    said_once(&stderr, "No such file or directory");
}
