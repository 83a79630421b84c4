//! The interface the daemon runs on, followed when it is made anew: a restarted wireguard-go
//! (or `wg-quick down` and `up`) makes a new wg0 with a new index, and the kernel releases the
//! programs' links as the old one goes (net/core/dev.c `dev_xdp_uninstall`, kernel/bpf/tcx.c
//! `tcx_uninstall`). The programs are attached to the new one, and the dashboard listens on it
//! again.

use std::net::IpAddr;

use anyhow::{Result, bail};
use aya::Ebpf;

use crate::kernel::{self, AttachedMode, HeldLinks, Iface, PinDir};

/// What listens on the interface's addresses (the dashboard, started by `tracker run`).
pub trait Listener {
    /// Asks it to close its sockets and listen on `addresses` (and wherever else it listens);
    /// never waits for that: the daemon's loop goes on meanwhile.
    fn listen_on(&mut self, addresses: &[IpAddr]);
    /// Its URLs once it listens anew, told once.
    fn new_urls(&mut self) -> Option<Vec<String>>;
    fn urls(&self) -> Vec<String>;
}

/// The attached programs, the interface they are on, and what listens on its addresses.
pub struct Follower {
    ebpf: Ebpf,
    pins: PinDir,
    iface: Iface,
    mode: AttachedMode,
    /// The links this daemon made; replaced when it attaches again (the old ones are dead).
    held: HeldLinks,
    listener: Option<Box<dyn Listener>>,
    /// The interface's addresses the dashboard listens on.
    listening: Vec<IpAddr>,
    /// The interface was found gone (and said so), not yet back.
    gone: bool,
    /// The last failure to follow, said once until it changes or following works again.
    failed: Option<String>,
}

/// What [`Follower::follow`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// The programs were attached to an interface made anew, in this mode.
    pub attached: Option<AttachedMode>,
    /// The dashboard listens anew, on these URLs.
    pub urls: Option<Vec<String>>,
}

/// The interface's addresses (none while it is down or being set up).
fn addresses(name: &str) -> Vec<IpAddr> {
    kernel::iface_addresses(name).map(|nets| nets.iter().map(ipnet::IpNet::addr).collect()).unwrap_or_default()
}

impl Follower {
    /// Attaches the programs of `ebpf` to `iface` ([`kernel::attach`]).
    pub fn attach(mut ebpf: Ebpf, pins: &PinDir, iface: Iface) -> Result<Self> {
        let (mode, held) = kernel::attach(&mut ebpf, pins, &iface)?;
        Ok(Self {
            ebpf,
            pins: pins.clone(),
            iface,
            mode,
            held,
            listener: None,
            listening: Vec::new(),
            gone: false,
            failed: None,
        })
    }

    /// Starts what listens on the interface: `start` is given its addresses now.
    pub fn start_listener(&mut self, start: impl FnOnce(&[IpAddr]) -> Option<Box<dyn Listener>>) {
        self.listening = addresses(&self.iface.name);
        self.listener = start(&self.listening);
    }

    pub fn iface(&self) -> &Iface {
        &self.iface
    }

    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    pub fn listener_urls(&self) -> Option<Vec<String>> {
        self.listener.as_ref().map(|d| d.urls())
    }

    /// Stops what listens (the dashboard), before the daemon's last writes.
    pub fn stop_listener(&mut self) {
        self.listener = None;
    }

    /// [`Follower::follow`], its failure logged (once while it stays the same) and tried again
    /// at the next call.
    pub fn check(&mut self) -> Followed {
        match self.follow() {
            Ok(f) => {
                self.failed = None;
                f
            }
            Err(e) => {
                let e = format!("{e:#}");
                if self.failed.as_ref() != Some(&e) {
                    tracing::error!(iface = %self.iface.name, "following the interface: {e}; tried again at every change");
                    self.failed = Some(e);
                }
                Followed::default()
            }
        }
    }

    /// Looks at the interface: attaches the programs again if it was made anew, and moves the
    /// dashboard to its addresses if they changed. Cheap when nothing did (an index lookup and
    /// getifaddrs(3)), so it runs on every link or address notice and every sweep.
    fn follow(&mut self) -> Result<Followed> {
        let mut out = Followed::default();
        let name = self.iface.name.clone();
        let Some(index) = kernel::ifindex(&name)? else {
            if !self.gone {
                self.gone = true;
                tracing::warn!(
                    iface = %name,
                    "{name} is gone: nothing passes through it now. The programs are attached \
                     to it again as soon as it is back"
                );
            }
            return Ok(out);
        };
        if index != self.iface.index {
            let new = kernel::iface(&name)?;
            if new.l2_len != self.iface.l2_len {
                bail!(
                    "{name} was made anew as a {} interface, not {} as before: the loaded \
                     programs read the other kind of header; restart tracker",
                    new.link_kind(),
                    self.iface.link_kind()
                );
            }
            let (mode, held) = kernel::attach(&mut self.ebpf, &self.pins, &new)?;
            tracing::info!(
                iface = %name, old_ifindex = self.iface.index, ifindex = new.index, xdp = mode.as_str(),
                "{name} was made anew: XDP and TC attached to it again, blocks enforced on it"
            );
            (self.iface, self.mode, self.held, self.gone) = (new, mode, held, false);
            out.attached = Some(mode);
        } else if self.gone {
            self.gone = false;
        }
        let now = addresses(&name);
        if let Some(l) = &mut self.listener {
            if out.attached.is_some() || now != self.listening {
                l.listen_on(&now);
            }
            if let Some(urls) = l.new_urls() {
                tracing::info!(?urls, "dashboard: listening on {name} as it is now");
                out.urls = Some(urls);
            }
        }
        self.listening = now;
        Ok(out)
    }
}
