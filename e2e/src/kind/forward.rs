//! The host's way into a kind cluster, like kind's port mapping: a TCP
//! forwarder from `127.0.0.1:<free port>` on the host to an address inside a
//! network namespace. One thread that entered the namespace makes every
//! outgoing connection (sockets keep the namespace they were made in); two
//! threads per connection copy the bytes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use nix::sched::CloneFlags;

use super::netns;

type ConnectRequest = mpsc::Sender<std::io::Result<TcpStream>>;

/// The open connections (both sockets), to shut them down on drop.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

/// Held by both copy threads of a connection: the last one out forgets it.
struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.open.conns.lock() {
            conns.remove(&self.id);
        }
    }
}

/// A running forwarder; stopped (with its connections) on drop.
pub struct Forwarder {
    /// The host side: `127.0.0.1:<port>`.
    pub local: SocketAddr,
    pub target: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<Open>,
    accept: Option<JoinHandle<()>>,
}

/// The thread in `netns` that connects to `target` on request.
fn connector(netns: &str, target: SocketAddr) -> anyhow::Result<mpsc::Sender<ConnectRequest>> {
    let file = std::fs::File::open(netns::path(netns))
        .with_context(|| format!("network namespace {netns} does not exist"))?;
    let (tx, rx) = mpsc::channel::<ConnectRequest>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("connect-{netns}"))
        .spawn(move || {
            let entered = nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            // Ends when the forwarder (every sender) is gone.
            for reply in rx {
                let _ = reply.send(TcpStream::connect_timeout(&target, Duration::from_secs(5)));
            }
        })?;
    ready_rx
        .recv()
        .context("connector thread ended")?
        .with_context(|| format!("failed to enter network namespace {netns}"))?;
    Ok(tx)
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn serve(
    client: TcpStream,
    connect: &mpsc::Sender<ConnectRequest>,
    open: &Arc<Open>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    connect.send(tx).context("connector thread ended")?;
    let upstream = rx.recv().context("connector thread ended")??;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = open.next.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut conns) = open.conns.lock() {
        conns.insert(id, [client.try_clone()?, upstream.try_clone()?]);
    }
    let reg = Arc::new(Registered {
        open: open.clone(),
        id,
    });
    let reg2 = reg.clone();
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        pipe(client, upstream);
        drop(reg);
    });
    std::thread::spawn(move || {
        pipe(u2, c2);
        drop(reg2);
    });
    Ok(())
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `target` in `netns`.
    pub fn start(netns: &str, target: SocketAddr) -> anyhow::Result<Self> {
        Self::start_on(netns, target, 0)
    }

    /// [`Self::start`] on loopback port `port` (0: a free one).
    pub fn start_on(netns: &str, target: SocketAddr, port: u16) -> anyhow::Result<Self> {
        let connect = connector(netns, target)?;
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Open::default());
        let (stop2, open2) = (stop.clone(), open.clone());
        let accept = std::thread::Builder::new()
            .name(format!("forward-{}", local.port()))
            .spawn(move || {
                for client in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if let Err(e) = serve(client, &connect, &open2) {
                        eprintln!("forwarder {local}: {e:#}");
                    }
                }
            })?;
        Ok(Self {
            local,
            target,
            stop,
            open,
            accept: Some(accept),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Ok(conns) = self.open.conns.lock() {
            for s in conns.values().flatten() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}
