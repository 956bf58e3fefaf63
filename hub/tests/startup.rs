//! Start-up refusals of the real `linkage-hub` binary: a listen address already taken stops
//! it with one message naming the address, on stderr whatever `RUST_LOG` lets through.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a refusing hub may take to exit; it opens its store first.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_listen_address_in_use_is_named_once_even_with_logging_off() {
    let folder = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkage-hub"))
        .args(["--listen", &addr, "--data-dir"])
        .arg(folder.path().join("hub"))
        .env("RUST_LOG", "off")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage-hub starts");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while child.try_wait().expect("the child can be polled").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("linkage-hub kept running on an address in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the hub's output is read");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("errors are UTF-8");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: ")),
        "names the address: {stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}
