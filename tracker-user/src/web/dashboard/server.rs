//! The dashboard's sockets and its HTTP/1 connections: each accepted connection passes the
//! [`Gate`] before a byte of it is read (a stranger's is reset: no response, no login page, no
//! sign of what listens), connections are capped, a request's headers must arrive within a
//! time limit, a connection lives a bounded time, and a stop lets requests in flight finish.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Semaphore, watch},
};

use super::access::Gate;

/// Connections open at once, over every listener: a phone's browser opens about six.
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this time (a connection that sends nothing, or
/// drips, is closed: it cannot hold a slot).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long, even if busy (keep-alive and, later, live
/// updates reconnect by themselves).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// How long a stop waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 64;

/// Where to listen: an address, and the interface the socket is tied to (`SO_BINDTODEVICE`),
/// so a tunnel address is reachable through the tunnel only, never from another network the
/// host is on, whatever its routing or forwarding would let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub device: Option<String>,
}

/// Binds every address it can; one that fails (taken, or gone) is logged and skipped, so the
/// others still serve.
pub fn bind(wanted: &[Listen]) -> Vec<(TcpListener, SocketAddr)> {
    let mut bound = Vec::new();
    for l in wanted {
        match bind_one(l) {
            Ok(listener) => {
                let addr = listener.local_addr().unwrap_or(l.addr);
                bound.push((listener, addr));
            }
            Err(e) => tracing::warn!(addr = %l.addr, device = ?l.device, "dashboard: cannot listen: {e}"),
        }
    }
    bound
}

fn bind_one(l: &Listen) -> std::io::Result<TcpListener> {
    let socket = if l.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A restarted daemon must not wait for its old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if let Some(device) = &l.device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.bind(l.addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on every listener until `stop` turns true, then lets requests in flight finish
/// (at most [`STOP_GRACE`]).
pub async fn serve(
    listeners: Vec<(TcpListener, SocketAddr)>,
    gate: Arc<Gate>,
    app: Router,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, addr) in listeners {
        tasks.spawn(accept_loop(listener, addr, Arc::clone(&gate), app.clone(), Arc::clone(&slots), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    gate: Arc<Gate>,
    app: Router,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
            // Finished connections are reaped as they end, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%addr, "dashboard: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !gate.allows(peer.ip()).await {
            tracing::debug!(%addr, %peer, "dashboard: refused a connection from outside the peers");
            reset(stream);
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%addr, %peer, "dashboard: too many connections; reset");
            reset(stream);
            continue;
        };
        connections.spawn(connection(stream, app.clone(), stop.clone(), slot));
    }
    // Stopping: the connections finish their requests within the grace time.
    let _ = tokio::time::timeout(STOP_GRACE + Duration::from_millis(500), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves once `stop` turns true (or its sender is gone). The watch guard is dropped inside,
/// so the futures that wait on it stay `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Closes a connection with a reset (linger 0): the client reads nothing at all, not even an
/// orderly end that a server would send.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(
    stream: TcpStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let born = Instant::now();
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(&mut stop) => {}
        _ = tokio::time::sleep_until((born + CONNECTION_LIFETIME).into()) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
}
