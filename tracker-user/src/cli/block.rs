//! `tracker block-ip`, `unblock-ip` and `blocks`: rule changes that keep the database and the
//! kernel maps equal, and the rule listing with live counters.

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{Global, ListArgs, open_existing, output};
use crate::{
    blocking::{self, KIND_IP, KernelBlocks},
    kernel::{self, PinDir},
    store::Store,
    timefmt,
};

#[derive(Args, Debug)]
pub struct BlockArgs {
    /// IPv4/IPv6 address or CIDR, e.g. 203.0.113.7 or 198.51.100.0/24.
    pub rule: String,
    /// A note to remember why (shown by `tracker blocks`).
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnblockArgs {
    /// The address or CIDR exactly as blocked (see `tracker blocks`).
    pub rule: String,
}

pub fn block_ip(global: &Global, args: &BlockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    kernel::require_root("tracker block-ip")?;
    let mut store = Store::open(&global.db)?;
    let pins = PinDir(global.pin_dir.clone());
    let rule = net.to_string();
    let id = match store.add_block(KIND_IP, &rule, args.comment.as_deref())? {
        Some(id) => id,
        None => {
            println!("{rule} is already blocked (see `tracker blocks`)");
            return Ok(());
        }
    };
    match KernelBlocks::open_pinned(&pins)? {
        Some(mut kernel) => {
            kernel.insert(&net, id).with_context(|| {
                format!("{rule} is saved, but adding it to the kernel failed; `tracker run` retries at start")
            })?;
            if pins.attached().0 {
                println!("blocked {rule} in the kernel (rule {id})");
            } else {
                println!(
                    "blocked {rule} in the kernel maps (rule {id}); no program is attached, so it \
                     takes effect when `tracker run` starts"
                );
            }
        }
        None => println!(
            "saved rule {id} for {rule}; the daemon's kernel maps are not loaded, so it takes \
             effect when `tracker run` starts"
        ),
    }
    Ok(())
}

pub fn unblock_ip(global: &Global, args: &UnblockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    kernel::require_root("tracker unblock-ip")?;
    let mut store = open_existing(global)?;
    let pins = PinDir(global.pin_dir.clone());
    let rule = net.to_string();
    let Some(id) = store.remove_block(KIND_IP, &rule)? else {
        bail!("no block rule for {rule} (see `tracker blocks`)");
    };
    match KernelBlocks::open_pinned(&pins)? {
        Some(mut kernel) => {
            kernel.remove(&net)?;
            println!("unblocked {rule} (rule {id}) in the kernel");
        }
        None => println!("removed rule {id} for {rule}; no kernel maps are loaded"),
    }
    Ok(())
}

pub fn blocks(global: &Global, args: &ListArgs) -> Result<()> {
    let store = open_existing(global)?;
    let pins = PinDir(global.pin_dir.clone());
    // Live counters need root; without them the listing shows the last sweep's numbers.
    let live = match kernel::require_root("") {
        Ok(()) => KernelBlocks::open_pinned(&pins)?.map(|k| k.counters()).transpose()?,
        Err(_) => None,
    };
    let clock = timefmt::KernelClock::now();
    let rows = store.blocks(&|id| {
        let k = live.as_ref()?.get(&id)?;
        Some((k.packets_dropped, (k.last_hit_ns != 0).then(|| clock.to_unix_ms(k.last_hit_ns))))
    })?;
    const COLUMNS: &[&str] = &["rule", "comment", "packets_dropped", "last_hit", "created"];
    output::render(&mut std::io::stdout().lock(), args.format, COLUMNS, &rows)
}

