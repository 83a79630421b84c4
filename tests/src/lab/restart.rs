//! Restarting the VPN host's wireguard-go, as a restart or an upgrade of its service does: the
//! interface and its control socket are made anew, then set up as [`Lab::up`] set them.

use super::{
    Lab, Ns, PHONE_UNDERLAY_V4, PHONE_V4, PHONE_V6, PHONE_WG_PORT, POLL, START_TIMEOUT, VPN_TUN_V4, VPN_TUN_V6,
    VPN_WG_PORT, public_key, run,
};
use crate::cmd::{succeeds, wait_until};
use anyhow::{Context, Result, ensure};
use std::process::Command;

impl Lab {
    /// Stops the VPN host's wireguard-go and starts a new one: the same interface name, key,
    /// port, addresses and first phone as a peer (a second phone is not set up again). Its
    /// control socket is a new file, so whatever was granted on the old one (an ACL) is gone.
    /// Returns once the phone reaches the internet through the new tunnel.
    pub fn restart_vpn_wireguard(&mut self) -> Result<()> {
        let iface = self.vpn_iface.clone();
        let pid = self
            .wireguard_go_procs()?
            .into_iter()
            .find(|p| p.argv.last() == Some(&iface))
            .with_context(|| format!("no wireguard-go serves {iface}"))?
            .pid;
        let at = self.children.iter().position(|c| c.pid() == pid).context("wireguard-go is not the lab's child")?;
        self.children.remove(at).stop()?;
        let (ns_name, socket) = (self.ns_name(Ns::Vpn), super::LabNames::wg_socket(&iface));
        wait_until(&format!("{iface} and {} to be gone", socket.display()), START_TIMEOUT, POLL, || {
            Ok(!socket.exists() && !succeeds(Command::new("ip").args(["-n", &ns_name, "link", "show", &iface]))?)
        })?;

        self.start_wireguard_go(Ns::Vpn, &iface)?;
        let (vpn_key, phone_key) = (self.dir.join("vpn.key"), self.dir.join("phone.key"));
        let allowed = format!("{PHONE_V4}/32,{PHONE_V6}/128");
        // The phone's endpoint, which the first wireguard-go learnt from its handshake: with it
        // the new one starts a handshake at once, instead of the phone noticing 15 s later that
        // its session is answered no more.
        let endpoint = format!("{PHONE_UNDERLAY_V4}:{PHONE_WG_PORT}");
        let peer = ["peer", &public_key(&phone_key)?, "allowed-ips", &allowed, "endpoint", &endpoint];
        self.wg_set(Ns::Vpn, &iface, &vpn_key, VPN_WG_PORT, &peer)?;
        self.tunnel_addresses(Ns::Vpn, &iface, VPN_TUN_V4, VPN_TUN_V6)?;
        let handshake = (0..5).any(|_| run(self.vpn_cmd("ping").args(["-c1", "-W2", &PHONE_V4.to_string()])).is_ok());
        ensure!(handshake, "the VPN host does not reach the phone through the new {iface}: {}", self.logs());
        self.verify()
    }
}
