//! The lab itself: it must carry IPv4 and IPv6 through the tunnel, serve its files and echo UDP,
//! answer DNS from both resolvers exactly as the zone module says, serve TLS, and leave nothing
//! behind when dropped.

use anyhow::{Context, Result, bail, ensure};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;
use tracker_tests::cmd::run;
use tracker_tests::lab::{
    self, ECHO_V4, ECHO_V6, FILE_1M, FILE_1M_SIZE, Lab, Resolver, SMALL_TXT, SMALL_TXT_CONTENT, UDP_ECHO_PORT, WEB_V4,
    WEB_V6,
};
use tracker_tests::zone::{self, QType};
use tracker_tests::{Ns, procs, root_or_skip};

#[test]
fn lab_carries_traffic_and_cleans_up() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let lab = Lab::up("tl1")?;
    let names = lab.names().clone();
    for target in [IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)] {
        run(lab.phone_cmd("ping").args(["-c1", "-W2", &target.to_string()]))?;
    }
    for web in [IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)] {
        assert_eq!(download_size(&lab, web)?, FILE_1M_SIZE, "size of {FILE_1M} from {web}");
    }
    for echo in [IpAddr::V4(ECHO_V4), IpAddr::V6(ECHO_V6)] {
        udp_round_trip(&lab, SocketAddr::new(echo, UDP_ECHO_PORT))?;
    }
    lab.set_offloads(false)?;
    let features = run(lab.vpn_cmd("ethtool").args(["-k", &lab.vpn_iface]))?;
    assert!(features.contains("generic-receive-offload: off"), "{features}");
    lab.set_offloads(true)?;
    resolvers_answer_the_zone(&lab)?;
    every_zone_host_serves(&lab)?;
    phone_resolves_through_the_lab(&lab)?;
    let wireguard_go = names.wireguard_go_procs()?;
    assert_eq!(wireguard_go.len(), 2, "one wireguard-go per side: {wireguard_go:?}");

    drop(lab);
    for ns in Ns::ALL {
        assert!(!names.ns_path(ns).exists(), "namespace {} left behind", names.ns_name(ns));
    }
    for p in &wireguard_go {
        assert!(procs::is_gone(p.pid), "wireguard-go {} left running", p.pid);
    }
    assert!(names.wireguard_go_procs()?.is_empty(), "wireguard-go left behind");
    assert!(!names.dir.exists(), "{} left behind", names.dir.display());
    assert!(!names.phone_etc_dir.exists(), "{} left behind", names.phone_etc_dir.display());
    Ok(())
}

/// What `dig` printed: the status and the answer section as (name, ttl, type, data), names
/// without the trailing dot.
#[derive(Debug, PartialEq, Eq)]
struct Dug {
    status: String,
    answers: Vec<(String, u32, String, String)>,
}

fn dig(lab: &Lab, server: IpAddr, tcp: bool, name: &str, qtype: &str) -> Result<Dug> {
    let mut cmd = lab.phone_cmd("dig");
    cmd.args(["+tries=1", "+time=3", "+noall", "+answer", "+comments"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = run(cmd.arg(format!("@{server}")).args([name, qtype]))?;
    let status = out
        .lines()
        .find_map(|l| l.split_once("status: "))
        .and_then(|(_, rest)| rest.split(',').next())
        .with_context(|| format!("no status in dig's output:\n{out}"))?
        .to_owned();
    let mut answers = Vec::new();
    for line in out.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 5 && f[2] == "IN", "odd answer line {line:?}");
        answers.push((
            f[0].trim_end_matches('.').to_owned(),
            f[1].parse()?,
            f[3].to_owned(),
            f[4].trim_end_matches('.').to_owned(),
        ));
    }
    Ok(Dug { status, answers })
}

/// The zone's answer as dig would print it.
fn expected(name: &str, qtype: QType) -> Dug {
    let r = zone::resolve(name, qtype);
    Dug {
        status: r.rcode.to_owned(),
        answers: r.answers.into_iter().map(|a| (a.name, a.ttl, a.rtype.to_owned(), a.data)).collect(),
    }
}

/// Both resolvers, over IPv4 and IPv6, UDP and TCP, answer every kind of name in the zone with
/// exactly the records, order and TTLs of the zone module (whole CNAME chains included), say
/// NXDOMAIN for missing names and refuse names outside the zone.
fn resolvers_answer_the_zone(lab: &Lab) -> Result<()> {
    let mut questions: Vec<(&str, QType)> = Vec::new();
    for name in zone::names() {
        questions.extend([(name, QType::A), (name, QType::Aaaa)]);
    }
    for name in zone::NXDOMAIN_NAMES {
        questions.push((name, QType::A));
    }
    questions.push(("cdn.lab.test", QType::A));
    // Every question once; each other resolver, family and transport a representative few.
    let few = [
        (zone::CHAIN[0], QType::A),
        (zone::DEEP_CHAIN[0], QType::Aaaa),
        (zone::MANY_NAME, QType::Aaaa),
        (zone::NXDOMAIN_NAMES[0], QType::A),
    ];
    for resolver in Resolver::ALL {
        for v6 in [false, true] {
            let server = resolver.addr(v6);
            for tcp in [false, true] {
                let all = resolver == Resolver::OnHost && !v6 && !tcp;
                for &(name, qtype) in if all { &questions[..] } else { &few[..] } {
                    let got = dig(lab, server, tcp, name, qtype.as_str())?;
                    assert_eq!(got, expected(name, qtype), "{name} {} from {server} (tcp: {tcp})", qtype.as_str());
                }
                let outside = dig(lab, server, tcp, "example.com", "A")?;
                assert_eq!(outside.status, "REFUSED", "example.com from {server}");
            }
        }
    }
    // A chain in detail, as the brief for the zone promises it.
    let www = dig(lab, Resolver::OnHost.addr(false), false, zone::CHAIN[0], "A")?;
    let owners: Vec<&str> = www.answers.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(owners, zone::CHAIN, "{www:?}");
    assert_eq!(www.answers[2].3, zone::CDN_V4.to_string());
    Ok(())
}

/// Every address of the zone that a client may be given serves HTTP (so any answer of
/// many.lab.test works), and TLS answers with the lab's certificate for its names.
fn every_zone_host_serves(lab: &Lab) -> Result<()> {
    for host in zone::server_addrs() {
        let out = run(lab
            .phone_cmd("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(lab::http_url(host, SMALL_TXT)))?;
        assert_eq!(out, format!("{SMALL_TXT_CONTENT}\n200"), "HTTP from {host}");
    }
    let tls_hosts = [
        (zone::TLS_NAME, IpAddr::V4(zone::TLS_V4)),
        (zone::TLS_NAME, IpAddr::V6(zone::TLS_V6)),
        (zone::SHARED_NAMES[0], IpAddr::V4(zone::SHARED_V4)),
        (zone::SHARED_NAMES[1], IpAddr::V6(zone::SHARED_V6)),
    ];
    for (name, addr) in tls_hosts {
        let resolve = match addr {
            IpAddr::V4(a) => format!("{name}:{}:{a}", lab::TLS_PORT),
            IpAddr::V6(a) => format!("{name}:{}:[{a}]", lab::TLS_PORT),
        };
        let code =
            run(https_status(lab, lab.phone_cmd("curl")).args(["--resolve", &resolve, &lab::https_url(name, "/")]))?;
        assert_eq!(code, "200", "TLS {name} at {addr}");
    }
    Ok(())
}

/// `curl` printing only the HTTP status, trusting the lab's TLS certificate.
fn https_status(lab: &Lab, mut curl: Command) -> Command {
    curl.args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(&lab.tls_cert);
    curl
}

/// The C library's resolver in the phone namespace: `ip netns exec` uses the on-host resolver
/// (the lab's /etc/netns resolv.conf), and `phone_cmd_resolving` whichever the test names.
fn phone_resolves_through_the_lab(lab: &Lab) -> Result<()> {
    let phone = lab.ns_name(Ns::Phone);
    let body = run(Command::new("ip")
        .args(["netns", "exec", &phone, "curl", "-sS", "--max-time", "10"])
        .arg(format!("http://{}/{SMALL_TXT}", zone::CHAIN[0])))?;
    assert_eq!(body, SMALL_TXT_CONTENT);
    for resolver in Resolver::ALL {
        for v6 in [false, true] {
            let server = resolver.addr(v6);
            let out = run(lab.phone_cmd_resolving(server, "getent")?.args(["ahosts", zone::MANY_NAME]))?;
            let mut got: Vec<IpAddr> = out.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
            got.sort();
            got.dedup();
            let mut want = zone::resolve(zone::MANY_NAME, QType::A).addresses;
            want.extend(zone::resolve(zone::MANY_NAME, QType::Aaaa).addresses);
            want.sort();
            assert_eq!(got, want, "getent ahosts {} via {server}", zone::MANY_NAME);
            let code =
                run(https_status(lab, lab.phone_cmd_resolving(server, "curl")?)
                    .arg(lab::https_url(zone::TLS_NAME, "/")))?;
            assert_eq!(code, "200", "https://{} via {server}", zone::TLS_NAME);
        }
    }
    Ok(())
}

/// Downloads `1m.bin` from the phone and returns how many bytes arrived.
fn download_size(lab: &Lab, web: IpAddr) -> Result<u64> {
    let url = lab::http_url(web, FILE_1M);
    let out = run(lab.phone_cmd("curl").args(["-sS", "--max-time", "20", "-o", "/dev/null"]).args([
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]))?;
    let (code, size) = out.split_once(' ').with_context(|| format!("curl said {out:?}"))?;
    ensure!(code == "200", "GET {url}: HTTP {code}");
    size.trim().parse().with_context(|| format!("curl said {out:?}"))
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
                ensure!(&buf[..n] == message.as_bytes(), "UDP echo from {to} changed the data");
                return Ok(());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).with_context(|| format!("UDP echo from {to}")),
        }
    }
    bail!("no UDP echo from {to} after 3 tries")
}

/// The real world's names, the second phone, the SSH and STUN servers: both resolvers answer
/// every real-world name exactly as `zone::world` says (the CNAME chain through Akamai whole),
/// refuse a look-alike and say NXDOMAIN under a company's domain; both phones reach the
/// companies' documentation addresses by name over HTTP and TLS; ssh from both phones gets
/// dropbear's banner and a refused login; a STUN binding from each phone is answered with its
/// own tunnel address; the second phone's wireguard-go goes with the lab.
#[test]
fn real_world_names_second_phone_ssh_and_stun() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut lab = Lab::up("tl3")?;
    lab.add_second_phone().context("adding the second phone")?;
    let host_key = lab.start_ssh().context("starting the SSH server")?;
    lab.start_stun().context("starting the STUN server")?;
    let names = lab.names().clone();

    for resolver in Resolver::ALL {
        for v6 in [false, true] {
            let server = resolver.addr(v6);
            for name in zone::world_client_names() {
                for qtype in [QType::A, QType::Aaaa] {
                    let got = dig(&lab, server, v6, name, qtype.as_str())?;
                    assert_eq!(got, expected(name, qtype), "{name} {} from {server}", qtype.as_str());
                }
            }
            for (name, status) in [("nope.apple.com", "NXDOMAIN"), ("www.evilapple.com", "REFUSED"), ("com", "REFUSED")]
            {
                assert_eq!(dig(&lab, server, false, name, "A")?.status, status, "{name} from {server}");
            }
        }
    }
    let chain = dig(&lab, Resolver::Upstream.addr(false), false, zone::AKAMAI_CHAIN[0], "A")?;
    let owners: Vec<&str> = chain.answers.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(owners, zone::AKAMAI_CHAIN, "{chain:?}");
    assert_eq!(chain.answers[2].3, zone::AKAMAI_V4.to_string());

    // Both phones, by name through each resolver: HTTP and TLS on every world address.
    for (ns, phone_v4) in [(Ns::Phone, lab::PHONE_V4), (Ns::Phone2, lab::PHONE2_V4)] {
        for (i, name) in zone::world_client_names().into_iter().enumerate() {
            let resolver = Resolver::ALL[i % 2].addr(i % 3 == 0);
            let family = if i % 2 == 0 { "-4" } else { "-6" };
            let mut curl = lab.cmd_resolving(ns, resolver, "curl")?;
            curl.args(["-sS", "--max-time", "10", family, "-w", "\n%{http_code} %{local_ip}"]);
            let out = run(curl.arg(format!("http://{name}/{SMALL_TXT}")))?;
            let local = if family == "-4" { IpAddr::V4(phone_v4) } else { IpAddr::V6(phone_v6(ns)) };
            assert_eq!(out, format!("{SMALL_TXT_CONTENT}\n200 {local}"), "http://{name} from {ns:?}");
            let code =
                run(https_status(&lab, lab.cmd_resolving(ns, resolver, "curl")?)
                    .args([family, &lab::https_url(name, "/")]))?;
            assert_eq!(code, "200", "https://{name} from {ns:?}");
        }
    }

    // SSH: banner, key exchange against the lab's host key, refused login.
    for ns in [Ns::Phone, Ns::Phone2] {
        for server in [IpAddr::V4(lab::SSH_V4), IpAddr::V6(lab::SSH_V6)] {
            let ssh = lab::ssh_attempt(&lab, ns, server, &host_key)?;
            assert!(
                ssh.server_version.starts_with("dropbear"),
                "server version {:?}:\n{}",
                ssh.server_version,
                ssh.log
            );
            assert!(ssh.log.contains("Server host key: ssh-ed25519"), "no key exchange:\n{}", ssh.log);
            assert_eq!((ssh.status, ssh.refused), (Some(255), true), "ssh from {ns:?} to {server}:\n{}", ssh.log);
        }
    }
    // STUN: the server sees each phone's own tunnel address and port (no NAT in the lab).
    for (ns, phone_v4, port) in [(Ns::Phone, lab::PHONE_V4, 47_001), (Ns::Phone2, lab::PHONE2_V4, 47_002)] {
        let answer = lab::stun_binding(&lab, ns, port)?;
        assert_eq!(answer.mapped, SocketAddr::new(phone_v4.into(), port), "STUN from {ns:?}");
    }

    let wireguard_go = names.wireguard_go_procs()?;
    assert_eq!(wireguard_go.len(), 3, "one wireguard-go per phone and the VPN host: {wireguard_go:?}");
    let wg = run(lab.vpn_cmd("wg").args(["show", &names.vpn_iface, "peers"]))?;
    let mut peers: Vec<&str> = wg.lines().collect();
    peers.sort();
    let mut want = vec![lab.phone_public_key(Ns::Phone)?, lab.phone_public_key(Ns::Phone2)?];
    want.sort();
    assert_eq!(peers, want, "the VPN host's peers");
    drop(lab);
    for ns in Ns::ALL {
        assert!(!names.ns_path(ns).exists(), "namespace {} left behind", names.ns_name(ns));
    }
    for p in &wireguard_go {
        assert!(procs::is_gone(p.pid), "wireguard-go {} left running", p.pid);
    }
    assert!(!names.phone2_etc_dir.exists(), "{} left behind", names.phone2_etc_dir.display());
    assert!(!lab::LabNames::wg_socket(&names.phone2_iface).exists(), "the second phone's wg socket left behind");
    Ok(())
}

fn phone_v6(ns: Ns) -> std::net::Ipv6Addr {
    if ns == Ns::Phone2 { lab::PHONE2_V6 } else { lab::PHONE_V6 }
}
