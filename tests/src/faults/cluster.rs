//! The processes under test: a real `linkage-hub` and two real `linkage-node`s, each node's
//! hub link through its own fault [`Proxy`]. Unlike [`crate::NodeProcess`], a node here comes
//! back on the address it first bound, so its clients and the proxies never learn a new one,
//! and a node can be started with extra environment (the negative control's unsafe store).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use tonic::transport::{Channel, Endpoint};

use crate::bin;
use crate::proxy::Proxy;

/// How long a process may take to bind its port after start (RocksDB recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request deadline of the harness's gRPC clients, so a write never hangs on a stalled
/// server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One server process the harness can SIGKILL and start again on the same data and address.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    program: PathBuf,
    /// Arguments without `--listen` and `--addr-file`, which [`Daemon::start`] adds.
    args: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    /// `127.0.0.1:0` until the first start has bound a port; that address afterwards.
    listen: String,
    child: Option<Child>,
    pub starts: u32,
}

impl Daemon {
    fn new(name: &str, program: PathBuf, args: Vec<String>, data_dir: &Path) -> Self {
        Daemon {
            name: name.to_owned(),
            program,
            args,
            env: Vec::new(),
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".into(),
            child: None,
            starts: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.listen
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// Starts the process and returns once it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let addr_file = self.data_dir.with_extension("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .args(["--listen", &self.listen, "--addr-file"])
            .arg(&addr_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("LINKAGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting {}", self.program.display()))?,
        );
        self.starts += 1;
        self.listen = self.wait_listening(&addr_file).await?;
        Ok(())
    }

    async fn wait_listening(&mut self, addr_file: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(addr_file)
                && !text.trim().is_empty()
            {
                return Ok(text.trim().to_owned());
            }
            if !self.is_running() {
                bail!(
                    "{} exited before listening:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            // Polling a file the child writes once; there is nothing to wait on instead.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as in a power cut as far as the process can tell
    /// (the kernel still holds what it was given, so this tests the process, not the disk).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A node with the proxy its hub link runs through.
#[derive(Debug)]
pub struct Office {
    pub org: String,
    pub daemon: Daemon,
    pub link: Proxy,
}

impl Office {
    /// A client that reconnects by itself after the node restarts on the same address.
    pub fn client(&self) -> anyhow::Result<RecordsClient<Channel>> {
        let channel = Endpoint::from_shared(self.daemon.url())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy();
        Ok(RecordsClient::new(channel))
    }

    pub async fn info(&self) -> anyhow::Result<pb::NodeInfoResponse> {
        Ok(self
            .client()?
            .node_info(pb::NodeInfoRequest {})
            .await?
            .into_inner())
    }
}

/// The hub and two offices that share every record.
#[derive(Debug)]
pub struct Cluster {
    pub root: PathBuf,
    pub hub: Daemon,
    pub offices: [Office; 2],
}

impl Cluster {
    /// Starts the hub, a proxy per office and both nodes. `unsafe_first` starts the first
    /// office's node with its write-ahead log disabled (the negative control).
    pub async fn start(root: &Path, orgs: [&str; 2], unsafe_first: bool) -> anyhow::Result<Self> {
        let mut hub = Daemon::new(
            "linkage-hub",
            bin("linkage-hub")?,
            vec!["--data-dir".into(), root.join("hub").display().to_string()],
            &root.join("hub"),
        );
        hub.start().await?;
        let upstream = hub.addr().parse().context("hub address")?;
        let mut offices = Vec::new();
        for (i, org) in orgs.into_iter().enumerate() {
            let link = Proxy::start(upstream).await?;
            let data_dir = root.join(org);
            let mut daemon = Daemon::new(
                &format!("linkage-node {org}"),
                bin("linkage-node")?,
                vec![
                    "--org".into(),
                    org.into(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--hub".into(),
                    link.url(),
                ],
                &data_dir,
            );
            if unsafe_first && i == 0 {
                daemon
                    .env
                    .push((linkage_node::server::UNSAFE_NO_WAL_ENV.into(), "1".into()));
            }
            daemon.start().await?;
            offices.push(Office {
                org: org.to_owned(),
                daemon,
                link,
            });
        }
        let offices: [Office; 2] = offices.try_into().expect("two offices were started");
        Ok(Cluster {
            root: root.to_owned(),
            hub,
            offices,
        })
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut text = String::new();
        for daemon in [&self.hub, &self.offices[0].daemon, &self.offices[1].daemon] {
            text += &format!(
                "--- {} ({})\n{}\n",
                daemon.name,
                daemon.log_path().display(),
                daemon.log_tail(lines)
            );
        }
        text
    }
}
