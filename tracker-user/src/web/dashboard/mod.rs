//! The dashboard: a web server inside the daemon for the devices' own browsers (the phone
//! through the tunnel, the VPN host's localhost), on a thread and runtime of its own, at a
//! lower CPU priority, reading through its own read-only connections: its work never waits on,
//! or delays, the daemon's counting.
//!
//! Routes, and where the rest of the dashboard plugs in:
//! - `GET /`: the first page ([`overview`]); `GET /static/dashboard.css`, `/static/live.js`
//!   and `/static/countdown.js` ([`assets`]);
//! - the detail pages ([`detail`]): `GET /domain/{name}`, `/company/{name}`,
//!   `/service/{name}`, `/device/{key}`;
//! - the query log and the connections ([`lists`]): `GET /log`, `/flows`, paged, and their
//!   new rows as JSON (`/log/new`, `/flows/new`);
//! - live updates ([`live`]): `GET /events` (server-sent events) and `/totals` (JSON);
//! - changes ([`changes`]): `GET /block?kind=&target=[&client=]`, a block's dry run and its
//!   buttons ([`block`]), `POST /block`, `POST /unblock`, each refused unless made from the
//!   dashboard's own page by a logged-in [`session`] with its CSRF token; `GET`/`POST /login`
//!   and `POST /logout` ([`login`], with the [`password`] `tracker dashboard --set-password`
//!   stored); `GET /link/{token}`, a one-time login link `tracker dashboard --login-link`
//!   printed ([`link`]); `GET /experiments`, `/experiments/{id}`: timed blocks and what broke
//!   ([`experiments`]).
//!
//! Every route is behind the [`access::Gate`] (WireGuard peers and loopback, checked when a
//! connection is accepted, in [`server`]) and the `Host` check and security headers of
//! [`headers`].

mod access;
mod assets;
mod block;
mod changes;
mod clock;
mod db;
mod detail;
mod experiments;
mod headers;
pub mod link;
mod lists;
mod live;
mod login;
mod overview;
mod params;
pub mod password;
mod server;
mod session;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    http::StatusCode,
    middleware,
    response::{IntoResponse as _, Response},
    routing::{get, post},
};
use tokio::sync::watch;

use crate::analysis::entity::EntityTable;
pub use headers::CSP;
pub use server::Listen;

/// The port when `--dashboard-port` is not given: unprivileged and outside the ports web
/// servers and development tools usually take (80, 443, 3000, 8000, 8080), so it does not
/// collide with a web server on the VPN host; "TRAC" on a phone keypad.
pub const DEFAULT_PORT: u16 = 8722;
/// The dashboard's threads run at this nice value: under load the daemon's loop goes first.
const NICE: libc::c_int = 10;
/// Blocking threads for its reads (one per reader connection, see [`db::READERS`]).
const BLOCKING_THREADS: usize = db::READERS;
/// How long `tracker run` waits for the dashboard to bind before going on without it.
const START_WAIT: Duration = Duration::from_secs(5);

/// What the dashboard serves and where.
#[derive(Clone, Debug)]
pub struct Config {
    /// The WireGuard interface whose peers may connect.
    pub iface: String,
    /// Where to listen (see [`default_listen`]).
    pub listen: Vec<Listen>,
    pub db: PathBuf,
    /// The daemon's pin directory: the dashboard's changes write its maps, as the CLI does.
    pub pin_dir: PathBuf,
    pub entities: Arc<EntityTable>,
}

/// The interface's own addresses (tied to the interface) and loopback, on `port`; `extra`
/// addresses too (a LAN address, say: still only peers and the host get in). IPv6 link-local
/// addresses are left out: they need a zone, and the tunnel has its own addresses.
pub fn default_listen(iface: &str, iface_addresses: &[IpAddr], port: u16, extra: &[IpAddr]) -> Vec<Listen> {
    let mut out: Vec<Listen> = iface_addresses
        .iter()
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|ip| Listen { addr: SocketAddr::new(*ip, port), device: Some(iface.to_owned()) })
        .collect();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)].iter().chain(extra) {
        if !out.iter().any(|l| l.addr.ip() == *ip) {
            out.push(Listen { addr: SocketAddr::new(*ip, port), device: None });
        }
    }
    out
}

/// The address to open, as a URL (`http://10.77.0.1:8722/`, `http://[fd77::1]:8722/`).
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// What every handler shares.
pub struct App {
    db: db::Db,
    entities: Arc<EntityTable>,
    live: live::Hub,
    /// Where changes write: the database (a writer opened per change) and the pinned maps.
    db_path: PathBuf,
    pin_dir: PathBuf,
    sessions: session::Sessions,
    throttle: session::Throttle,
    /// One password check at a time.
    logins: tokio::sync::Semaphore,
}

/// The routes, behind the `Host` check, with the security headers on every response (also
/// on the 403 of a wrong `Host` and the 404 of an unknown path).
fn router(app: Arc<App>, hosts: access::Hosts) -> Router {
    Router::new()
        .route("/", get(overview::handler))
        .route("/block", get(block::page).post(changes::block))
        .route("/unblock", post(changes::unblock))
        .route("/login", get(login::page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/link/{token}", get(link::open))
        .route("/experiments", get(experiments::list))
        .route("/experiments/{id}", get(experiments::report))
        .route("/domain/{name}", get(detail::domain))
        .route("/company/{name}", get(detail::company))
        .route("/service/{name}", get(detail::service))
        .route("/device/{key}", get(detail::device))
        .route("/log", get(lists::log))
        .route("/flows", get(lists::flows))
        .route("/log/new", get(lists::log_new))
        .route("/flows/new", get(lists::flows_new))
        .route("/events", get(live::events))
        .route("/totals", get(live::totals))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::LIVE_JS_PATH, get(assets::live_js))
        .route(assets::COUNTDOWN_JS_PATH, get(assets::countdown_js))
        .route("/favicon.ico", get(assets::favicon))
        .with_state(app)
        .layer(middleware::from_fn_with_state(hosts, headers::own_host))
        .layer(middleware::map_response(headers::secure))
}

/// A read that gave no page: 503, logged with why (the page says only that it is unavailable).
fn unavailable(e: &db::DbError) -> Response {
    tracing::warn!("dashboard: {e}");
    (StatusCode::SERVICE_UNAVAILABLE, "The dashboard cannot read the database right now; try again.\n").into_response()
}

/// The running dashboard; dropping it stops it.
pub struct Dashboard {
    urls: Vec<String>,
    stop: watch::Sender<bool>,
    /// Where to listen; a new value (even an equal one) makes the thread bind again.
    listen: watch::Sender<Vec<Listen>>,
    /// What each binding bound, from the thread.
    bound: std::sync::mpsc::Receiver<Vec<SocketAddr>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dashboard {
    /// Binds every address it can and serves on its own thread. Fails only when no address
    /// could be bound or the thread could not start; the daemon goes on without it then.
    pub fn start(config: Config) -> Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let (listen, listen_rx) = watch::channel(config.listen.clone());
        let (bound_tx, bound) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || run(config, stop_rx, listen_rx, bound_tx))
            .context("starting the dashboard's thread")?;
        let mut dashboard = Self { urls: Vec::new(), stop, listen, bound, thread: Some(thread) };
        dashboard.wait_bound()?;
        anyhow::ensure!(!dashboard.urls.is_empty(), "the dashboard could not listen on any address");
        Ok(dashboard)
    }

    fn wait_bound(&mut self) -> Result<()> {
        match self.bound.recv_timeout(START_WAIT) {
            Ok(bound) => self.urls = bound.into_iter().map(url).collect(),
            Err(_) => anyhow::bail!("the dashboard did not bind within {START_WAIT:?}"),
        }
        Ok(())
    }

    /// Closes its listening sockets and binds `wanted` instead, keeping its sessions: for an
    /// interface made anew. `SO_BINDTODEVICE` ties a socket to the interface's index, not its
    /// name (net/core/sock.c, `sock_bindtoindex`), so the old sockets would never see a
    /// connection through the new interface even with the same addresses. Returns at once:
    /// the thread binds once its open connections have ended (a live stream takes the grace
    /// time), and [`Dashboard::new_urls`] then has what it bound.
    pub fn listen_again(&mut self, wanted: Vec<Listen>) {
        self.listen.send_replace(wanted);
    }

    /// The URLs of the newest binding since the last call, if the thread made one.
    pub fn new_urls(&mut self) -> Option<&[String]> {
        let newest = std::iter::from_fn(|| self.bound.try_recv().ok()).last()?;
        self.urls = newest.into_iter().map(url).collect();
        Some(&self.urls)
    }

    /// The URLs it listens on, tunnel addresses first.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The dashboard's thread: its runtime, its sockets, its loop, until told to stop. Each value
/// of `listen` is a generation of listening sockets; the state (sessions, the live hub, the
/// peers' gate) outlives them.
fn run(
    config: Config,
    stop: watch::Receiver<bool>,
    mut listen: watch::Receiver<Vec<Listen>>,
    bound_tx: std::sync::mpsc::Sender<Vec<SocketAddr>>,
) {
    // SAFETY: setpriority on this thread's own id (Linux's nice value is per thread, and the
    // threads this one starts inherit it).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) } != 0 {
        tracing::debug!("dashboard: could not lower its priority: {}", std::io::Error::last_os_error());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("dashboard-read")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("dashboard: cannot start its runtime: {e}");
            let _ = bound_tx.send(Vec::new());
            return;
        }
    };
    runtime.block_on(async move {
        let mut listeners = server::bind(&listen.borrow_and_update());
        let mut bound: Vec<SocketAddr> = listeners.iter().map(|(_, a)| *a).collect();
        let _ = bound_tx.send(bound.clone());
        if listeners.is_empty() {
            return;
        }
        let gate = Arc::new(access::Gate::new(&config.iface));
        gate.refresh().await;
        let refresher = tokio::spawn({
            let (gate, mut stop) = (Arc::clone(&gate), stop.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(access::PEER_REFRESH) => gate.refresh().await,
                        _ = server::stopped(&mut stop) => break,
                    }
                }
            }
        });
        let app = Arc::new(App {
            db: db::Db::new(config.db.clone()),
            entities: config.entities,
            live: live::Hub::new(stop.clone()),
            db_path: config.db.clone(),
            pin_dir: config.pin_dir.clone(),
            sessions: session::Sessions::default(),
            throttle: session::Throttle::default(),
            logins: tokio::sync::Semaphore::new(1),
        });
        let ticker = tokio::spawn(live::ticker(Arc::clone(&app)));
        loop {
            // This generation's sockets serve until the dashboard stops or is to listen anew.
            let (generation, generation_rx) = watch::channel(false);
            let (mut stop_wait, mut listen_wait) = (stop.clone(), listen.clone());
            let ends = tokio::spawn(async move {
                tokio::select! {
                    _ = server::stopped(&mut stop_wait) => {}
                    _ = listen_wait.changed() => {}
                }
                let _ = generation.send(true);
            });
            let router = router(Arc::clone(&app), access::Hosts::new(&bound));
            server::serve(listeners, Arc::clone(&gate), router, generation_rx).await;
            ends.abort();
            if bound.is_empty() {
                // Nothing bound this time (serve returned at once): wait for the next addresses.
                let (mut stop_wait, mut listen_wait) = (stop.clone(), listen.clone());
                tokio::select! {
                    _ = server::stopped(&mut stop_wait) => {}
                    _ = listen_wait.changed() => {}
                }
            }
            if *stop.borrow() || !listen.has_changed().unwrap_or(false) {
                break;
            }
            // The old sockets are closed (serve returned), so the same ports bind again.
            listeners = server::bind(&listen.borrow_and_update());
            bound = listeners.iter().map(|(_, a)| *a).collect();
            tracing::info!(listening = ?bound, "dashboard: listening anew");
            let _ = bound_tx.send(bound.clone());
        }
        refresher.abort();
        ticker.abort();
    });
    // Reads still running are interrupted by their own timeouts; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
}
