//! What `tracker status` reports, gathered from the database, the pins and the kernel into one
//! typed value: the CLI prints it, and the dashboard will serve the same.

use std::path::Path;

use anyhow::Result;
use serde::{Serialize, Serializer, ser::SerializeMap as _};
use tracker_common::{Counter, names};

use crate::{
    daemon,
    kernel::{self, FlowTables, PinDir},
    store::{Store, facts::DaemonFacts},
};

/// `tracker status`: one flat object, the same keys in every format.
#[derive(Debug, Serialize)]
pub struct Status {
    pub daemon_running: bool,
    pub daemon_pid: Option<u32>,
    pub xdp_attached: bool,
    pub tc_egress_attached: bool,
    pub pin_dir: String,
    pub db: String,
    /// The database with its WAL and shared-memory files.
    pub db_bytes: u64,
    /// Absent when the database does not exist yet.
    #[serde(flatten)]
    pub stored: Option<Stored>,
    /// What the daemon last recorded (also after it stopped, until another starts).
    #[serde(flatten)]
    pub daemon: DaemonFacts,
    #[serde(flatten)]
    pub kernel: KernelStatus,
}

/// Row counts and size of the database.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub schema_version: u32,
    pub flows_stored: u64,
    pub block_rules: u64,
    pub dns_queries_stored: u64,
    /// Pages in use, without the free ones and the WAL: what the rows take.
    pub db_used_bytes: u64,
    /// `db_used_bytes` over `flows_stored` (DNS log and roll-ups included), rounded; absent
    /// while no flow is stored. `cargo xtask bench storage` measures it in a steady state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_flow: Option<u64>,
}

impl Stored {
    fn read(store: &Store) -> Result<Self> {
        let flows_stored = store.flow_count()?;
        let size = store.size()?;
        let db_used_bytes = size.file_bytes.saturating_sub(size.free_bytes);
        Ok(Self {
            schema_version: store.schema_version()?,
            flows_stored,
            block_rules: store.block_count()?,
            dns_queries_stored: store.dns_count()?,
            db_used_bytes,
            bytes_per_flow: (flows_stored > 0).then(|| db_used_bytes.div_ceil(flows_stored)),
        })
    }
}

/// What the kernel's pinned maps say, when they can be read.
#[derive(Debug, Default, Serialize)]
pub struct KernelStatus {
    /// Why the kernel counters are missing (not root), when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_counters: Option<&'static str>,
    /// Every [`Counter`] under its name; absent before the maps are pinned.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows_in_kernel: Option<u64>,
    /// Entries the LRU evicted: every entry created is still in the table, was deleted by the
    /// daemon once it ended (its `flows_ended` fact), or was evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_evictions: Option<u64>,
}

/// The kernel's counters, summed over CPUs, serialized as `name: value` in [`Counter::ALL`]'s
/// order.
#[derive(Debug)]
pub struct Counters(pub Vec<(Counter, u64)>);

impl Counters {
    pub fn get(&self, c: Counter) -> Option<u64> {
        self.0.iter().find(|(k, _)| *k == c).map(|&(_, v)| v)
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, v) in &self.0 {
            map.serialize_entry(c.name(), v)?;
        }
        map.end()
    }
}

/// Reads the status of the daemon of `db` whose maps are pinned in `pins`. Writes nothing: the
/// database is opened as a reader, so `status` on a path that is not a tracker database
/// changes nothing.
pub fn gather(db: &Path, pins: &PinDir) -> Result<Status> {
    let daemon_pid = daemon::daemon_pid(db);
    let (xdp_attached, tc_egress_attached) = kernel::links_attached(pins);
    let db_bytes: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let (stored, daemon) = if db.exists() {
        let store = Store::open_reader(db)?;
        (Some(Stored::read(&store)?), store.daemon_facts()?)
    } else {
        (None, DaemonFacts::default())
    };
    let kernel = if kernel::require_maps("").is_ok() {
        kernel_status(pins, daemon.flows_ended.unwrap_or(0))?
    } else {
        KernelStatus { kernel_counters: Some("run as root to read the kernel counters"), ..KernelStatus::default() }
    };
    Ok(Status {
        daemon_running: daemon_pid.is_some(),
        daemon_pid,
        xdp_attached,
        tc_egress_attached,
        pin_dir: pins.0.display().to_string(),
        db: db.display().to_string(),
        db_bytes,
        stored,
        daemon,
        kernel,
    })
}

fn kernel_status(pins: &PinDir, flows_ended: u64) -> Result<KernelStatus> {
    let Some(map) = pins.open_map(names::COUNTERS)? else { return Ok(KernelStatus::default()) };
    let counters = Counters(kernel::read_counters(&aya::maps::PerCpuArray::<_, u64>::try_from(map)?)?);
    let (mut flows_in_kernel, mut flow_evictions) = (None, None);
    if let (Some(v4), Some(v6)) = (pins.open_map(names::FLOWS_V4)?, pins.open_map(names::FLOWS_V6)?) {
        let live = FlowTables::from_maps(v4, v6)?.keys().filter(|k| k.is_ok()).count() as u64;
        let created = counters.get(Counter::FlowsCreated).unwrap_or(0);
        flows_in_kernel = Some(live);
        flow_evictions = Some(created.saturating_sub(live).saturating_sub(flows_ended));
    }
    Ok(KernelStatus { kernel_counters: None, counters: Some(counters), flows_in_kernel, flow_evictions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::protocol::AppProtocol,
        store::tests::{labelled_flow, temp_db},
    };

    #[test]
    fn the_database_size_is_its_used_pages_and_bytes_per_flow_divides_it() {
        let p = temp_db("status-size");
        let mut w = Store::open(&p).unwrap();
        let empty = Stored::read(&Store::open_reader(&p).unwrap()).unwrap();
        assert_eq!((empty.flows_stored, empty.bytes_per_flow), (0, None));
        let flows: Vec<_> = (0..3u64)
            .map(|n| labelled_flow(n, "10.77.0.2", 7_200_000, Some("www.example.com"), AppProtocol::Tls, 500))
            .collect();
        w.upsert_flows("b", &flows).unwrap();
        let r = Store::open_reader(&p).unwrap();
        let stored = Stored::read(&r).unwrap();
        let c = r.conn();
        let q = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, i64>(0)).unwrap() as u64;
        let used = (q("page_count") - q("freelist_count")) * q("page_size");
        assert_eq!(stored.flows_stored, 3);
        assert_eq!(stored.db_used_bytes, used);
        assert_eq!(stored.bytes_per_flow, Some(used.div_ceil(3)));
    }

    #[test]
    fn status_is_one_flat_object_with_numbers_as_numbers() {
        let status = Status {
            daemon_running: false,
            daemon_pid: None,
            xdp_attached: false,
            tc_egress_attached: false,
            pin_dir: "/sys/fs/bpf/tracker".into(),
            db: "t.db".into(),
            db_bytes: 4096,
            stored: Some(Stored {
                schema_version: 4,
                flows_stored: 2,
                block_rules: 0,
                dns_queries_stored: 1,
                db_used_bytes: 8192,
                bytes_per_flow: Some(4096),
            }),
            daemon: DaemonFacts { attached_pid: Some(42), ..DaemonFacts::default() },
            kernel: KernelStatus {
                counters: Some(Counters(vec![(Counter::RingLost, 3)])),
                flows_in_kernel: Some(5),
                ..KernelStatus::default()
            },
        };
        let v = serde_json::to_value(&status).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "daemon_running",
                "daemon_pid",
                "xdp_attached",
                "tc_egress_attached",
                "pin_dir",
                "db",
                "db_bytes",
                "schema_version",
                "flows_stored",
                "block_rules",
                "dns_queries_stored",
                "db_used_bytes",
                "bytes_per_flow",
                "attached_pid",
                "ring_lost",
                "flows_in_kernel"
            ]
        );
        assert_eq!(
            (&v["attached_pid"], &v["ring_lost"], &v["daemon_pid"]),
            (&42.into(), &3.into(), &serde_json::Value::Null)
        );
    }
}
