//! Shared by the end-to-end tests, the district runner and the benchmarks: start real
//! `linkage-hub` and `linkage-node` processes on loopback, each with its own RocksDB folder,
//! talk to them over gRPC, and kill them (SIGKILL) when asked or when dropped.
//!
//! Binaries are found beside the running executable (`target/<profile>/`), so build them first:
//! `cargo build --workspace --bins` (the README's commands do).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use linkage_proto::v1::district_client::DistrictClient;
use linkage_proto::v1::records_client::RecordsClient;
use tonic::transport::Channel;

pub mod bench;
pub mod faults;
pub mod proxy;
pub mod scenario;
pub mod sim;

/// The folder holding the workspace's binaries for the running profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("executables live in a folder");
    // Test executables live in target/<profile>/deps; binaries one level up.
    if dir.ends_with("deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run `cargo build --workspace --bins` (the README's commands do) first",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that is killed with SIGKILL when dropped, so a failing test leaves nothing
/// behind.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub fn start(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env(
                "RUST_LOG",
                std::env::var("LINKAGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // As deploy/*.service run them: glibc's malloc with two arenas and a fixed mmap
            // threshold (see the units for why).
            .env("MALLOC_ARENA_MAX", "2")
            .env("MALLOC_MMAP_THRESHOLD_", "131072")
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Spawned {
            child: Some(child),
            name: name.to_owned(),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (std's `kill` sends SIGKILL on Unix): no shutdown code runs, like a power cut
    /// as far as the process is concerned.
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

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits for a process started with `--addr-file` to write its bound address.
fn wait_addr(proc: &mut Spawned, addr_file: &Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(addr_file)
            && !text.is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        if !proc.is_running() {
            bail!(
                "{} exited before listening:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen within {timeout:?}:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running hub process.
#[derive(Debug)]
pub struct HubProcess {
    pub proc: Spawned,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl HubProcess {
    /// Starts a hub on `listen` ("127.0.0.1:0" for any free port).
    pub fn start(data_dir: &Path, listen: &str) -> anyhow::Result<Self> {
        Self::start_with(data_dir, listen, &[])
    }

    /// [`HubProcess::start`] with more command-line flags.
    pub fn start_with(data_dir: &Path, listen: &str, flags: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let addr_file = data_dir.with_extension("addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut args = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            listen.into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
        ];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let mut proc = Spawned::start(
            "linkage-hub",
            &bin("linkage-hub")?,
            &args,
            &data_dir.with_extension("log"),
        )?;
        let addr = wait_addr(&mut proc, &addr_file, Duration::from_secs(30))?;
        Ok(HubProcess {
            proc,
            addr,
            data_dir: data_dir.to_owned(),
        })
    }

    /// Kills the hub with SIGKILL and starts it again on the same address and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill9();
        let again = HubProcess::start(&self.data_dir, &self.addr)?;
        *self = again;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn district(&self) -> anyhow::Result<DistrictClient<Channel>> {
        Ok(DistrictClient::new(channel(&self.url()).await?))
    }
}

/// A running node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub proc: Spawned,
    pub addr: String,
    pub org: String,
    pub data_dir: PathBuf,
    pub hub: Option<String>,
}

impl NodeProcess {
    pub fn start(org: &str, data_dir: &Path, hub: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let addr_file = data_dir.with_extension("addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut args = vec![
            "--org".into(),
            org.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
        ];
        if let Some(hub) = hub {
            args.extend(["--hub".into(), hub.to_owned()]);
        }
        let name = format!("linkage-node {org}");
        let mut proc = Spawned::start(
            &name,
            &bin("linkage-node")?,
            &args,
            &data_dir.with_extension("log"),
        )?;
        let addr = wait_addr(&mut proc, &addr_file, Duration::from_secs(30))?;
        Ok(NodeProcess {
            proc,
            addr,
            org: org.to_owned(),
            data_dir: data_dir.to_owned(),
            hub: hub.map(str::to_owned),
        })
    }

    /// Starts the node again on the same data (after a kill or a stop).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill9();
        let again = NodeProcess::start(&self.org, &self.data_dir, self.hub.as_deref())?;
        *self = again;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn records(&self) -> anyhow::Result<RecordsClient<Channel>> {
        Ok(RecordsClient::new(channel(&self.url()).await?))
    }
}

pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
