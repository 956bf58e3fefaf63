//! The real `linkage-node` binary as a child process: its own data folder, a loopback port
//! chosen by the kernel and reported through `--addr-file`, and SIGKILL when the test is done
//! with it (or panics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to open its store and listen; generous for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct NodeBinary {
    child: Option<Child>,
    pub addr: String,
    log: PathBuf,
}

impl NodeBinary {
    /// Starts a node of `org` on the store in `folder/store`, logging to `folder/node.log`.
    pub fn start(org: &str, folder: &Path) -> NodeBinary {
        NodeBinary::start_with_args(org, folder, &[])
    }

    /// [`NodeBinary::start`] with `extra` flags after the usual ones, e.g. `--config FILE`.
    pub fn start_with_args(org: &str, folder: &Path, extra: &[&std::ffi::OsStr]) -> NodeBinary {
        let addr_file = folder.join("node.addr");
        let log = folder.join("node.log");
        let _ = std::fs::remove_file(&addr_file);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file opens");
        let child = Command::new(env!("CARGO_BIN_EXE_linkage-node"))
            .args(["--org", org, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(folder.join("store"))
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file handle clones"))
            .stderr(out)
            .spawn()
            .expect("linkage-node starts");
        let mut node = NodeBinary {
            child: Some(child),
            addr: String::new(),
            log,
        };
        node.addr = node.wait_addr(&addr_file);
        node
    }

    /// Polls for the address file the node writes (atomically) once it listens.
    fn wait_addr(&mut self, addr_file: &Path) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(addr_file)
                && !text.trim().is_empty()
            {
                return text.trim().to_owned();
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "linkage-node exited ({exited:?}) before listening:\n{}",
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "linkage-node did not listen within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL (std's `Child::kill` on Unix): no shutdown code runs in the node.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeBinary {
    fn drop(&mut self) {
        self.kill9();
    }
}
