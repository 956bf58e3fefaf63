//! A fault-injecting TCP proxy for loopback tests: sits between a node and the hub and can cut
//! the link (closing open connections and refusing new ones), heal it, delay every chunk, stall
//! forwarding, reset open connections, or leave them half-open (the far end gone without a
//! word). `tc netem` is not available on these machines; this is the tool instead.

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
    /// While true, connections stay open but forward nothing; held bytes go on afterwards.
    stalled: watch::Sender<bool>,
    /// Bumped by [`Proxy::reset`]: open connections end with a TCP reset.
    resets: watch::Sender<u64>,
    /// Bumped by [`Proxy::half_open`]: open connections go silent for good.
    half_opens: watch::Sender<u64>,
}

/// The bytes a [`Proxy`] has forwarded, readable apart from the proxy.
#[derive(Clone, Debug)]
pub struct ByteCount(Arc<Faults>);

impl ByteCount {
    pub fn get(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
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

    /// A handle on [`Proxy::bytes_forwarded`] that a task can watch while the proxy's owner
    /// is borrowed elsewhere (the district benchmark restarts nodes meanwhile).
    pub fn byte_count(&self) -> ByteCount {
        ByteCount(self.faults.clone())
    }

    /// Stops forwarding on every connection, open or new, without closing any: the link is
    /// congested or a middlebox froze. Bytes already read are held and go on at
    /// [`Proxy::resume`]; TCP flow control pushes back on the senders meanwhile.
    pub fn stall(&self) {
        self.faults.stalled.send_replace(true);
    }

    /// Ends a [`Proxy::stall`].
    pub fn resume(&self) {
        self.faults.stalled.send_replace(false);
    }

    pub fn is_stalled(&self) -> bool {
        *self.faults.stalled.borrow()
    }

    /// Ends every open connection with a TCP reset (RST, not FIN), as a crashed middlebox or
    /// a rebooted peer's kernel would. New connections are accepted as usual.
    pub fn reset(&self) {
        self.faults.resets.send_modify(|g| *g += 1);
    }

    /// Turns every open connection half-open: the far end is gone without a FIN or a reset,
    /// so the proxy keeps both sockets open, swallows whatever either side sends and answers
    /// nothing, for good. Only the endpoints' own keepalives can notice. New connections are
    /// forwarded as usual, so a side that reconnects recovers.
    pub fn half_open(&self) {
        self.faults.half_opens.send_modify(|g| *g += 1);
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
        tokio::spawn(connection(client, upstream, faults, cut));
    }
}

/// How a forwarded connection ended.
enum Ending {
    /// A side closed, or the link was cut: close both sockets normally.
    Closed,
    Reset,
    HalfOpen,
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    mut cut: watch::Receiver<u64>,
) {
    // Subscribed before connecting upstream, so a fault injected from here on reaches this
    // connection.
    let mut resets = faults.resets.subscribe();
    let mut half_opens = faults.half_opens.subscribe();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ending = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, faults.clone());
        let down = pump(server_read, client_write, faults.clone());
        tokio::select! {
            _ = up => Ending::Closed,
            _ = down => Ending::Closed,
            _ = cut.changed() => Ending::Closed,
            _ = resets.changed() => Ending::Reset,
            _ = half_opens.changed() => Ending::HalfOpen,
        }
    };
    match ending {
        Ending::Closed => {}
        Ending::Reset => {
            // SO_LINGER 0 makes close send RST; tokio closes without blocking either way.
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        Ending::HalfOpen => {
            let swallow_up = swallow(&mut client);
            let swallow_down = swallow(&mut server);
            tokio::select! {
                _ = futures::future::join(swallow_up, swallow_down) => {}
                _ = cut.changed() => {}
            }
        }
    }
}

/// Reads and discards until the peer closes: a half-open connection's dead end.
async fn swallow(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            // The peer's FIN goes nowhere either; keep the socket open for the other side.
            std::future::pending::<()>().await;
        }
    }
    std::future::pending::<()>().await;
}

async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    faults: Arc<Faults>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut stalled = faults.stalled.subscribe();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
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
