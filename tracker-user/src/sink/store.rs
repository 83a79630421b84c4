//! The store as a sink: a sweep's batch in one SQLite transaction, so a sweep costs one commit
//! (one fsync of the WAL) whatever it wrote, and a failed one leaves nothing half written.

use anyhow::Result;

use super::{Batch, Sink};
use crate::store::Store;

impl Sink for Store {
    fn write(&mut self, batch: &Batch<'_>) -> Result<()> {
        let Batch { boot_id, flows, dns, blocks, names, facts } = batch;
        Store::write(self, |w| {
            w.upsert_flows(boot_id, flows)?;
            w.insert_dns(dns)?;
            for b in *blocks {
                w.set_block_kernel_count(b.rule_id, b.dropped, b.last_hit_ms)?;
            }
            for b in *names {
                w.set_refused_kernel_count(b.rule_id, b.dropped, b.last_hit_ms)?;
            }
            w.update_daemon_facts(facts)
        })
    }
}
