//! A TCP proxy on loopback between worker processes and PostgreSQL that can stop
//! forwarding without closing anything: a half-open partition.
//!
//! While it is cut, no byte is read from or written to any socket it holds and nothing is
//! closed: no FIN, no RST. Each side's kernel still acknowledges what it is sent (the
//! sockets are open, their buffers have room), so TCP on either end sees a healthy
//! connection whose peer simply never answers — a stalled middlebox, a frozen database
//! host behind a load balancer. New connections are still accepted while it is cut, but
//! the proxy does not connect them upstream until it heals.
//!
//! It heals one of two ways. [`Proxy::heal`]: forwarding resumes on every connection
//! (whatever was queued meanwhile flows on, as TCP retransmission delivers it after a
//! short outage) and new connections are served again. [`Proxy::heal_new_only`]: new
//! connections are served, but every connection open at that moment stays silent for ever
//! (a firewall, NAT or load balancer that lost their state and drops their packets):
//! dead, yet never closed.
//!
//! The worker processes write their ledger through the same database URL. The ledger is
//! the suite's instrument, not the system under test, so a connection is *exempt* from
//! the cut as soon as its client has sent a statement that only the ledger sends
//! (`chaos.ledger`, or the `clock_timestamp()` reading of its clock sync, the first
//! statement on its first connection). Every other connection (the runtime's pool and its
//! control/LISTEN connection) is cut. A ledger connection opened during the cut is cut
//! like any new connection until the heal, since the proxy cannot tell it apart before
//! its first statement.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Statements only the workers' ledger sends (see the module docs).
const LEDGER_MARKERS: &[&[u8]] = &[b"chaos.ledger", b"clock_timestamp()"];

/// Counters the scenario prints.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Of those, accepted while the proxy was cut (held until the heal).
    pub accepted_while_cut: u64,
    /// Connections recognised as the ledger's (exempt from the cut).
    pub ledger: u64,
    /// Connections currently open (client side not yet finished).
    pub open: u64,
    /// Runtime connections open at the moment of the cut.
    pub cut_open: u64,
    /// Bytes written on a cut connection while the proxy was cut (a write already under
    /// way when the cut began); 0 unless a large write straddled it.
    pub leaked_bytes: u64,
    /// Connections left dead by [`Proxy::heal_new_only`].
    pub dead: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    accepted_while_cut: AtomicU64,
    ledger: AtomicU64,
    ledger_open: AtomicU64,
    open: AtomicU64,
    cut_open: AtomicU64,
    leaked_bytes: AtomicU64,
    dead: AtomicU64,
}

struct Shared {
    /// `true` while cut.
    cut: watch::Sender<bool>,
    counters: Counters,
    /// Every connection, for [`Proxy::heal_new_only`].
    conns: Mutex<Vec<Weak<Conn>>>,
}

/// One proxied connection.
struct Conn {
    /// Recognised as the ledger's: forwarded whatever the cut.
    ledger: AtomicBool,
    /// Never forwarded again ([`Proxy::heal_new_only`]).
    dead: AtomicBool,
}

impl Shared {
    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    fn blocks(&self, conn: &Conn) -> bool {
        conn.dead.load(Ordering::SeqCst) || (self.is_cut() && !conn.ledger.load(Ordering::SeqCst))
    }

    /// Returns once `conn` may be forwarded: the proxy is not cut, or `conn` is exempt.
    /// Never returns for a dead connection (its task ends when the proxy is dropped).
    async fn wait_open(&self, conn: &Conn) {
        let mut rx = self.cut.subscribe();
        while self.blocks(conn) {
            if conn.dead.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            // An exemption is set by the other direction of the connection: re-check it
            // now and then as well as on every change of the cut.
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }
}

/// The proxy. Dropping it closes the listener and every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1` (a free port) and forwards every connection to
    /// `localhost:upstream_port`, which must resolve to a loopback address.
    pub async fn start(upstream_port: u16) -> Result<Proxy> {
        let upstream = tokio::net::lookup_host(("localhost", upstream_port))
            .await
            .context("cannot resolve localhost")?
            .collect::<Vec<_>>();
        ensure!(
            !upstream.is_empty() && upstream.iter().all(|a| a.ip().is_loopback()),
            "localhost resolves to {upstream:?}, not only to loopback addresses"
        );
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cut,
            counters: Counters::default(),
            conns: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops forwarding on every connection but the ledger's, closing nothing.
    pub fn cut(&self) {
        let open = self.shared.counters.open.load(Ordering::SeqCst);
        let ledger = self.shared.counters.ledger_open.load(Ordering::SeqCst);
        self.shared
            .counters
            .cut_open
            .store(open.saturating_sub(ledger), Ordering::SeqCst);
        self.shared.cut.send_replace(true);
    }

    /// Resumes forwarding on every connection and serves new ones again.
    pub fn heal(&self) {
        self.shared.cut.send_replace(false);
    }

    /// Serves new connections again, but leaves every connection open now (the ledger's
    /// apart) silent for ever, and open.
    pub fn heal_new_only(&self) {
        let mut conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        for conn in conns.iter().filter_map(Weak::upgrade) {
            if !conn.ledger.load(Ordering::SeqCst) && !conn.dead.swap(true, Ordering::SeqCst) {
                self.shared.counters.dead.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(conns);
        self.shared.cut.send_replace(false);
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::SeqCst),
            accepted_while_cut: c.accepted_while_cut.load(Ordering::SeqCst),
            ledger: c.ledger.load(Ordering::SeqCst),
            open: c.open.load(Ordering::SeqCst),
            cut_open: c.cut_open.load(Ordering::SeqCst),
            leaked_bytes: c.leaked_bytes.load(Ordering::SeqCst),
            dead: c.dead.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks: aborting it drops them all.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: Vec<SocketAddr>, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow with every one ever made.
        while connections.try_join_next().is_some() {}
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: back off a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let counters = &shared.counters;
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.is_cut() {
            counters.accepted_while_cut.fetch_add(1, Ordering::SeqCst);
        }
        counters.open.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let upstream = upstream.clone();
        let conn = Arc::new(Conn {
            ledger: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        });
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.retain(|c| c.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        connections.spawn(async move {
            let _ = serve(client, &upstream, &shared, &conn).await;
            shared.counters.open.fetch_sub(1, Ordering::SeqCst);
            if conn.ledger.load(Ordering::SeqCst) {
                shared.counters.ledger_open.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
}

/// Serves one connection: connects upstream once not cut, then forwards both ways until
/// either side ends it.
async fn serve(
    client: TcpStream,
    upstream: &[SocketAddr],
    shared: &Shared,
    conn: &Conn,
) -> Result<()> {
    // Accepted while cut: the client's connect succeeded, but nothing happens until the
    // heal (its startup message waits in the socket).
    shared.wait_open(conn).await;
    let server = TcpStream::connect(upstream)
        .await
        .context("cannot connect upstream")?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let to_server = pump(client_read, server_write, shared, conn, true);
    let to_client = pump(server_read, client_write, shared, conn, false);
    tokio::pin!(to_server, to_client);
    // One side finishing cleanly (EOF, passed on as a FIN) leaves the other running until
    // it ends too; an error on either ends both.
    tokio::select! {
        result = &mut to_server => if result.is_ok() { let _ = to_client.await; },
        result = &mut to_client => if result.is_ok() { let _ = to_server.await; },
    }
    Ok(())
}

/// Copies `from` to `to`, reading only while not cut (the bytes stay in the kernel's
/// buffers, unread) and writing only while not cut. `sniff` looks for the ledger's
/// statements in the client's bytes.
async fn pump(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    conn: &Conn,
    sniff: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous read, so a marker split across two reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        shared.wait_open(conn).await;
        from.readable().await?;
        if shared.blocks(conn) {
            // Cut while waiting for data: leave it unread.
            continue;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if sniff && !conn.ledger.load(Ordering::SeqCst) {
            carry.extend_from_slice(&buf[..n]);
            if LEDGER_MARKERS
                .iter()
                .any(|m| carry.windows(m.len()).any(|w| w == *m))
            {
                conn.ledger.store(true, Ordering::SeqCst);
                shared.counters.ledger.fetch_add(1, Ordering::SeqCst);
                shared.counters.ledger_open.fetch_add(1, Ordering::SeqCst);
                carry = Vec::new();
            } else {
                let keep = carry.len().min(32);
                carry.drain(..carry.len() - keep);
            }
        }
        // Read just before a cut: held until the heal.
        shared.wait_open(conn).await;
        to.write_all(&buf[..n]).await?;
        if shared.blocks(conn) {
            shared
                .counters
                .leaked_bytes
                .fetch_add(n as u64, Ordering::SeqCst);
        }
    }
}
