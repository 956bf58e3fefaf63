//! A fault-injecting TCP proxy for loopback tests: sits between a node and the hub and can cut
//! the link (closing open connections and refusing new ones), heal it, or delay every chunk.
//! `tc netem` is not available on these machines; this is the tool instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Faults {
    cut: AtomicBool,
    delay_ms: AtomicU64,
    /// Bytes forwarded in both directions, for the benchmarks' wire figures.
    bytes: AtomicU64,
}

/// A proxy listening on loopback and forwarding to `upstream`.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    /// Bumped on every cut, so connection tasks drop their sockets.
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            faults.clone(),
            generation.clone(),
        ));
        Ok(Proxy {
            addr,
            faults,
            generation,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.faults.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.faults.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.faults.cut.load(Ordering::SeqCst)
    }

    /// Delays every forwarded chunk by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn bytes_forwarded(&self) -> u64 {
        self.faults.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        if faults.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        let cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(client_read, server_write, faults.clone());
            let down = pump(server_read, client_write, faults);
            let mut cut = cut;
            tokio::select! {
                _ = up => {}
                _ = down => {}
                _ = cut.changed() => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if faults.cut.load(Ordering::SeqCst) {
            return;
        }
        faults.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
