//! The dashboard's reads: its own read-only SQLite connections, a few at most, each used by one
//! request at a time on the blocking threads (never on the async ones), every read cut off
//! after a time limit, so a page never holds the database long enough to slow the daemon's
//! writes (readers never block a WAL writer; a long reader only delays checkpoints).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, oneshot};

use crate::store::Store;

/// Reads at once: one rendering while another waits is plenty for a household, and the
/// daemon keeps the rest of the two cores.
pub const READERS: usize = 2;
/// How long a request waits for a free connection before it is answered "busy".
const WAIT_FOR_READER: Duration = Duration::from_secs(5);
/// The longest one read may take; it is then interrupted (`sqlite3_interrupt`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection older than this is closed rather than reused, so a database the daemon
/// made anew (the old one deleted under it) is read within this time.
const MAX_AGE: Duration = Duration::from_secs(300);

/// Why a read gave no answer.
#[derive(Debug)]
pub enum DbError {
    /// Every connection stayed busy for [`WAIT_FOR_READER`].
    Busy,
    /// The read took longer than its time limit ([`READ_TIMEOUT`]) and was interrupted.
    TimedOut,
    /// Opening the database or the query failed.
    Failed(anyhow::Error),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => write!(f, "every database reader stayed busy for {WAIT_FOR_READER:?}"),
            Self::TimedOut => write!(f, "the read took too long and was stopped"),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for DbError {}

/// A connection waiting for its next read, and when it was opened.
struct Idle {
    store: Store,
    opened: Instant,
}

/// The pool of read-only connections.
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Idle>>>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl Db {
    /// Connections to the database at `path`, opened on first use.
    pub fn new(path: PathBuf) -> Self {
        Self::with_timeout(path, READ_TIMEOUT)
    }

    fn with_timeout(path: PathBuf, timeout: Duration) -> Self {
        Self { path, idle: Arc::new(Mutex::new(Vec::new())), permits: Arc::new(Semaphore::new(READERS)), timeout }
    }

    /// Runs `read` on a read-only connection on a blocking thread, within [`READ_TIMEOUT`]
    /// (a read still running then is interrupted).
    pub async fn read<T, F>(&self, read: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    {
        let permit = tokio::time::timeout(WAIT_FOR_READER, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| DbError::Busy)?
            .map_err(|_| DbError::Busy)?;
        let (idle, path) = (Arc::clone(&self.idle), self.path.clone());
        let (handle_tx, mut handle_rx) = oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            // The permit is held until the connection is back, even after a timeout: the
            // interrupted read still occupies it until SQLite notices.
            let _permit = permit;
            let conn = match take(&idle) {
                Some(conn) => conn,
                None => Idle { store: Store::open_reader(&path)?, opened: Instant::now() },
            };
            let _ = handle_tx.send(conn.store.conn().get_interrupt_handle());
            let result = read(&conn.store);
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result.map_err(DbError::Failed),
            Ok(Err(join)) => Err(DbError::Failed(anyhow::anyhow!("the read panicked: {join}"))),
            Err(_) => {
                if let Ok(handle) = handle_rx.try_recv() {
                    handle.interrupt();
                }
                Err(DbError::TimedOut)
            }
        }
    }
}

/// An idle connection young enough to reuse; older ones are closed.
fn take(idle: &Mutex<Vec<Idle>>) -> Option<Idle> {
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    idle.retain(|c| c.opened.elapsed() < MAX_AGE);
    idle.pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn reads_reuse_connections_and_a_runaway_query_is_interrupted() {
        let path = temp_db("dashboard-db");
        drop(Store::open(&path).unwrap());
        let limit = Duration::from_millis(300);
        let db = Db::with_timeout(path.clone(), limit);
        runtime().block_on(async {
            let n = db.read(|s| s.flow_count()).await.unwrap();
            assert_eq!(n, 0);
            assert_eq!(db.idle.lock().unwrap().len(), 1, "the connection is back for the next read");
            // A recursive CTE that would count for hours.
            let started = Instant::now();
            let endless = db
                .read(|s| {
                    let n: i64 = s.conn().query_row(
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                        [],
                        |r| r.get(0),
                    )?;
                    Ok(n)
                })
                .await;
            assert!(matches!(endless, Err(DbError::TimedOut)), "{endless:?}");
            assert!(started.elapsed() < limit + Duration::from_secs(2), "{:?}", started.elapsed());
            // Interrupted, the connection goes back and serves the next read.
            let n = db.read(|s| s.flow_count()).await.unwrap();
            assert_eq!(n, 0);
        });
        let missing = Db::new(path.with_extension("missing"));
        let err = runtime().block_on(missing.read(|s| s.flow_count())).unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
    }
}
