//! The lab itself: it must carry IPv4 and IPv6 through the tunnel, serve its files and echo UDP,
//! and leave nothing behind when dropped.

use anyhow::{Context, Result, bail, ensure};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;
use tracker_tests::cmd::run;
use tracker_tests::lab::{
    self, ECHO_V4, ECHO_V6, FILE_1M, FILE_1M_SIZE, Lab, UDP_ECHO_PORT, WEB_V4, WEB_V6,
};
use tracker_tests::{Ns, procs, root_or_skip};

#[test]
fn lab_carries_traffic_and_cleans_up() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let lab = Lab::up("tl1")?;
    let names = lab.names().clone();
    for target in [IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)] {
        run(lab
            .phone_cmd("ping")
            .args(["-c1", "-W2", &target.to_string()]))?;
    }
    for web in [IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)] {
        assert_eq!(
            download_size(&lab, web)?,
            FILE_1M_SIZE,
            "size of {FILE_1M} from {web}"
        );
    }
    for echo in [IpAddr::V4(ECHO_V4), IpAddr::V6(ECHO_V6)] {
        udp_round_trip(&lab, SocketAddr::new(echo, UDP_ECHO_PORT))?;
    }
    lab.set_offloads(false)?;
    let features = run(lab.vpn_cmd("ethtool").args(["-k", &lab.vpn_iface]))?;
    assert!(
        features.contains("generic-receive-offload: off"),
        "{features}"
    );
    lab.set_offloads(true)?;
    let wireguard_go = names.wireguard_go_procs()?;
    assert_eq!(
        wireguard_go.len(),
        2,
        "one wireguard-go per side: {wireguard_go:?}"
    );

    drop(lab);
    for ns in Ns::ALL {
        assert!(
            !names.ns_path(ns).exists(),
            "namespace {} left behind",
            names.ns_name(ns)
        );
    }
    for p in &wireguard_go {
        assert!(procs::is_gone(p.pid), "wireguard-go {} left running", p.pid);
    }
    assert!(
        names.wireguard_go_procs()?.is_empty(),
        "wireguard-go left behind"
    );
    assert!(!names.dir.exists(), "{} left behind", names.dir.display());
    Ok(())
}

/// Downloads `1m.bin` from the phone and returns how many bytes arrived.
fn download_size(lab: &Lab, web: IpAddr) -> Result<u64> {
    let url = lab::http_url(web, FILE_1M);
    let out = run(lab
        .phone_cmd("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{size_download}", &url]))?;
    let (code, size) = out
        .split_once(' ')
        .with_context(|| format!("curl said {out:?}"))?;
    ensure!(code == "200", "GET {url}: HTTP {code}");
    size.trim()
        .parse()
        .with_context(|| format!("curl said {out:?}"))
}

/// Sends one datagram from the phone through the tunnel and expects it back unchanged.
fn udp_round_trip(lab: &Lab, to: SocketAddr) -> Result<()> {
    let message = format!("lab echo test to {to}");
    let local: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let socket = lab.run_in(Ns::Phone, || UdpSocket::bind(local))??;
    socket.connect(to)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1500];
    // UDP may lose a datagram; a few bounded tries keep the test about the lab, not luck.
    for _ in 0..3 {
        socket.send(message.as_bytes())?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                ensure!(
                    &buf[..n] == message.as_bytes(),
                    "UDP echo from {to} changed the data"
                );
                return Ok(());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).with_context(|| format!("UDP echo from {to}")),
        }
    }
    bail!("no UDP echo from {to} after 3 tries")
}
