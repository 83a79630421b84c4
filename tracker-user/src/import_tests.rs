//! Imports of captures the tests write: what is stored, under which source, on which clock;
//! a second import; damage; an interrupted import run again.

use std::{path::Path, sync::Arc};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

use super::*;
use crate::{
    analysis::tls::tests::client_hello,
    pipeline::pairing::tests::message,
    store::{FlowQuery, dns::DnsQuery, schema::LIVE_SOURCE, tests::temp_db},
    timefmt,
};

/// The capture starts at 2026-11-02T10:00:00Z, five weeks before the tests run.
const T0_MS: i64 = 1_793_613_600_000;
const PHONE: [u8; 4] = [10, 77, 0, 2];
const RESOLVER: [u8; 4] = [10, 77, 0, 1];
const SERVER: [u8; 4] = [192, 0, 2, 10];

/// A TCP segment with the given flags, sequence and payload.
fn tcp(from_phone: bool, syn: bool, ack: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if from_phone { (PHONE, SERVER, 40_000, 443) } else { (SERVER, PHONE, 443, 40_000) };
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1, 65_535);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    if fin {
        b = b.fin();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64).udp(sport, dport).write(&mut out, payload).unwrap();
    out
}

/// A phone's DNS lookup of www.example.com, then an HTTPS connection to the answer (a
/// ClientHello naming it, data both ways, FIN both ways); ten packets, 100 ms apart.
fn session() -> Vec<Vec<u8>> {
    let mut sni = vec![0, 18, 0, 0, 15];
    sni.extend_from_slice(b"www.example.com");
    vec![
        udp(PHONE, RESOLVER, 5353, 53, &message(7, false, "www.example.com", &[])),
        udp(RESOLVER, PHONE, 53, 5353, &message(7, true, "www.example.com", &[("www.example.com", "192.0.2.10")])),
        tcp(true, true, false, false, &[]),
        tcp(false, true, true, false, &[]),
        tcp(true, false, true, false, &[]),
        tcp(true, false, true, false, &client_hello(&[(0, sni)])),
        tcp(false, false, true, false, &[0x17; 900]),
        tcp(true, false, true, true, &[]),
        tcp(false, false, true, true, &[]),
        tcp(true, false, true, false, &[]),
    ]
}

/// Writes `packets` as a raw-IP pcap (as tcpdump writes a capture of wg0), 100 ms apart.
fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let header = PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (i, p) in packets.iter().enumerate() {
        let ts = std::time::Duration::from_millis((T0_MS + 100 * i as i64) as u64);
        w.write_packet(&PcapPacket::new(ts, p.len() as u32, p)).unwrap();
    }
}

fn options(source: &str) -> ImportOptions {
    ImportOptions {
        source: source.into(),
        client_nets: crate::source::capture::DEFAULT_CLIENT_NETS.iter().map(|n| n.parse().unwrap()).collect(),
        local_nets: Vec::new(),
        timeouts: Timeouts::default(),
        entities: Arc::new(EntityTable::builtin()),
        sweep_every: SWEEP_EVERY_FRAMES,
    }
}

/// Every flow of `source`, as `tracker flows --source` lists them.
fn flows(store: &Store, source: i64) -> Vec<crate::store::FlowRow> {
    store.flows(&FlowQuery { source, ..FlowQuery::default() }).unwrap()
}

fn dns_rows(store: &Store) -> u64 {
    store.conn().query_row("SELECT count(*) FROM dns_queries", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

#[test]
fn an_import_is_stored_under_its_source_on_the_capture_clock_and_named() {
    let db = temp_db("import");
    let file = db.with_file_name("wg0.pcap");
    let packets = session();
    write_pcap(&file, &packets);
    let mut store = Store::open(&db).unwrap();
    let s = import_file(&mut store, &file, &options("phone"), &mut |_| {}).unwrap();
    assert!(s.error.is_none() && s.skipped.is_none());
    assert_eq!(
        s.counts,
        CaptureCounts { frames: 10, ip_packets: 10, not_ip: 0, malformed: 0, fragments: 0, flows_created: 2 }
    );
    assert_eq!(s.dns_exchanges, 1);
    assert_eq!(s.span_ms, Some((T0_MS, T0_MS + 900)));

    let id = store.source(Some("phone")).unwrap().id;
    assert_ne!(id, LIVE_SOURCE);
    assert!(flows(&store, LIVE_SOURCE).is_empty(), "nothing of an import is live");
    let rows = flows(&store, id);
    assert_eq!(rows.len(), 2);
    let https = rows.iter().find(|r| r.remote_port == 443).unwrap();
    // Up: SYN, ACK, hello, FIN, last ACK; down: SYN-ACK, data, FIN. IP bytes as built.
    let size = |i: usize| packets[i].len() as u64;
    assert_eq!((https.packets_up, https.packets_down), (5, 3));
    assert_eq!(https.bytes_up, size(2) + size(4) + size(5) + size(7) + size(9));
    assert_eq!(https.bytes_down, size(3) + size(6) + size(8));
    assert_eq!(https.name.as_deref(), Some("www.example.com"));
    assert_eq!(https.app_protocol.as_deref(), Some("tls"));
    assert_eq!(https.first_seen, timefmt::rfc3339(T0_MS + 200), "the capture's clock, not the import's");
    assert_eq!(https.client, "10.77.0.2");

    let dns = store.dns(&DnsQuery { source: id, ..DnsQuery::default() }).unwrap();
    assert_eq!(dns.len(), 1);
    assert_eq!((dns[0].name.as_str(), dns[0].client.as_str()), ("www.example.com", "10.77.0.2"));
    assert!(store.dns(&DnsQuery::default()).unwrap().is_empty(), "the live log has none of it");
    // `--since 7d` of this source counts back from its last packet.
    assert_eq!(store.source(Some("phone")).unwrap().end_ms, Some(T0_MS + 900));
}

#[test]
fn the_same_bytes_again_are_said_and_add_nothing() {
    let db = temp_db("import-twice");
    let file = db.with_file_name("a.pcap");
    write_pcap(&file, &session());
    let mut store = Store::open(&db).unwrap();
    import_file(&mut store, &file, &options("a"), &mut |_| {}).unwrap();
    let (before, dns_before) = (flows(&store, 1), dns_rows(&store));
    // A copy under another name and another --source is still the same bytes.
    let copy = db.with_file_name("copy.pcap");
    std::fs::copy(&file, &copy).unwrap();
    let again = import_file(&mut store, &copy, &options("b"), &mut |_| {}).unwrap();
    let earlier = again.skipped.expect("recognised");
    assert_eq!((earlier.source.as_str(), earlier.packets, earlier.finished), ("a", 10, true));
    assert_eq!(again.counts, CaptureCounts::default());
    assert_eq!((flows(&store, 1), dns_rows(&store)), (before, dns_before));
    assert!(store.source(Some("b")).is_err(), "no source was made for it");
}

#[test]
fn an_interrupted_import_read_again_counts_nothing_twice() {
    let db = temp_db("import-again");
    let file = db.with_file_name("a.pcap");
    write_pcap(&file, &session());
    let mut store = Store::open(&db).unwrap();
    import_file(&mut store, &file, &options("a"), &mut |_| {}).unwrap();
    let rollup = |s: &Store| -> Vec<(String, String, i64, i64)> {
        let mut st = s
            .conn()
            .prepare("SELECT dim, k1, connections, packets FROM rollup WHERE source = 1 ORDER BY 1, 2, 3, 4")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
    };
    let before = (flows(&store, 1), dns_rows(&store), rollup(&store));
    // As if killed before its end: the row says it never finished.
    store.conn().execute("UPDATE imports SET finished = NULL", []).unwrap();
    let s = import_file(&mut store, &file, &options("a"), &mut |_| {}).unwrap();
    assert!(s.skipped.is_none(), "read again");
    assert_eq!((flows(&store, 1), dns_rows(&store), rollup(&store)), before);
    // Under another name it is refused: its rows are the first source's.
    store.conn().execute("UPDATE imports SET finished = NULL", []).unwrap();
    let e = import_file(&mut store, &file, &options("b"), &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("--source a"), "{e:#}");
}

#[test]
fn damage_keeps_what_came_before_and_says_where() {
    let db = temp_db("import-damage");
    let file = db.with_file_name("cut.pcap");
    let packets = session();
    write_pcap(&file, &packets);
    let bytes = std::fs::read(&file).unwrap();
    // Cut the last packet in half: 24-byte file header, 16-byte record headers.
    let last_len = packets[9].len();
    let last_at = bytes.len() - last_len - 16;
    std::fs::write(&file, &bytes[..bytes.len() - last_len / 2]).unwrap();
    let mut store = Store::open(&db).unwrap();
    let s = import_file(&mut store, &file, &options("cut"), &mut |_| {}).unwrap();
    let e = s.error.expect("damage");
    assert_eq!((e.packet, e.offset), (Some(10), last_at as u64));
    let said = e.to_string();
    assert!(said.contains("cut.pcap") && said.contains("packet 10"), "{said}");
    assert_eq!(s.counts.frames, 9);
    let https = flows(&store, 1).into_iter().find(|r| r.remote_port == 443).unwrap();
    assert_eq!((https.packets_up, https.packets_down), (4, 3), "the nine packets before are kept");
    let imports = store.imports().unwrap();
    assert!(imports[0].state.starts_with("stopped: "), "{:?}", imports[0]);

    // Not a capture at all: refused before anything is written.
    let text = db.with_file_name("notes.txt");
    std::fs::write(&text, "hello, this is not a capture").unwrap();
    let e = import_file(&mut store, &text, &options("notes"), &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("notes.txt"), "{e:#}");
    assert!(store.source(Some("notes")).is_err());
    assert_eq!(store.imports().unwrap().len(), 1);
}

#[test]
fn a_flow_idle_past_its_timeout_ends_and_splits_from_its_return_as_live() {
    // A probe at 0 and 100 ms, then again after a gap. UDP ends after 60 s idle; one back within
    // the next 60 s is the same flow again (folded into its row), later a new one: the live
    // daemon's rules, which an import's seldom sweeps must not change.
    for (gap_ms, rows) in [(61_000u64, vec![3]), (121_000, vec![1, 2])] {
        let db = temp_db(&format!("import-idle-{gap_ms}"));
        let file = db.with_file_name("idle.pcap");
        let probe = udp(PHONE, SERVER, 40_000, 3478, b"ping");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let header = PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() };
        let mut w = PcapWriter::with_header(std::fs::File::create(&file).unwrap(), header).unwrap();
        for at_ms in [0u64, 100, 100 + gap_ms] {
            let ts = std::time::Duration::from_millis(T0_MS as u64 + at_ms);
            w.write_packet(&PcapPacket::new(ts, probe.len() as u32, &probe)).unwrap();
        }
        drop(w);
        let mut store = Store::open(&db).unwrap();
        let s = import_file(&mut store, &file, &options("idle"), &mut |_| {}).unwrap();
        assert_eq!((s.counts.frames, s.counts.ip_packets, s.counts.flows_created), (3, 3, 2), "an ended entry");
        let mut got: Vec<u64> = flows(&store, 1).into_iter().map(|r| r.packets_up).collect();
        got.sort();
        assert_eq!(got, rows, "back after {gap_ms} ms");
    }
}

/// Every robustness capture imports without a panic, with the counts the kernel programs give
/// the same frames (`differential::` checks that agreement frame by frame); a copy cut at two
/// thirds keeps the frames before the cut and names the packet it stopped in.
#[test]
fn the_robustness_captures_import_and_cut_copies_keep_what_came_before() {
    let dir = crate::source::capture::file::tests::pcaps_or_skip!();
    // (file, frames, IP packets, not IP, malformed)
    const EXPECTED: [(&str, u64, u64, u64, u64); 13] = [
        ("ndpi__badpackets.pcap", 93, 93, 0, 0),
        ("ndpi__dns-google-nsid.pcapng", 14, 14, 0, 0),
        ("ndpi__dns_ambiguous_names.pcap", 20, 20, 0, 0),
        ("ndpi__dns_fragmented.pcap", 66, 66, 0, 0),
        ("ndpi__fuzz-2006-06-26-2594.pcap", 691, 605, 83, 3),
        ("ndpi__ip_fragmented_garbage.pcap", 1252, 1248, 0, 4),
        ("ndpi__malformed_dns.pcap", 6, 6, 0, 0),
        ("ndpi__ssh.pcap", 295, 295, 0, 0),
        ("tcpdump__dns_fwdptr.pcap", 1, 1, 0, 0),
        ("zeek__dns__ech.pcap", 4, 4, 0, 0),
        ("zeek__ipv6-fragmented-dns.pcap", 8, 8, 0, 0),
        ("zeek__quic__quicdoq.pcap", 9, 9, 0, 0),
        ("zeek__trunc__ip6-ext-trunc.pcap", 1, 0, 0, 1),
    ];
    let db = temp_db("import-robustness");
    let mut store = Store::open(&db).unwrap();
    for (name, frames, ip, not_ip, malformed) in EXPECTED {
        let path = dir.join(name);
        let s = import_file(&mut store, &path, &options(name), &mut |_| {}).unwrap();
        assert!(s.error.is_none(), "{name}: {:?}", s.error);
        let c = s.counts;
        assert_eq!((c.frames, c.ip_packets, c.not_ip, c.malformed), (frames, ip, not_ip, malformed), "{name}");

        let bytes = std::fs::read(&path).unwrap();
        let cut = db.with_file_name(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let s = import_file(&mut store, &cut, &options(&format!("cut-{name}")), &mut |_| {}).unwrap();
        let e = s.error.unwrap_or_else(|| panic!("{name}: a cut copy reads whole"));
        assert!(e.offset <= bytes.len() as u64 * 2 / 3, "{name}: {e}");
        if let Some(n) = e.packet {
            assert_eq!(n, s.counts.frames + 1, "{name}: stopped in the packet after the last one kept: {e}");
        }
        assert!(s.counts.frames < frames || frames == 1, "{name}");
        let kept = store.source(Some(&format!("cut-{name}"))).map(|src| flows(&store, src.id).len()).unwrap_or(0);
        assert_eq!(kept > 0, s.counts.ip_packets > 0, "{name}: the flows before the cut are stored");
    }
}

/// A roll-up row: source, dim, client, span, bucket, k1-k3, connections, packets, bytes up, down.
type RollupRow = (i64, String, String, i64, i64, String, String, String, i64, i64, i64, i64);

/// Roll-ups of every source and dimension, as stored.
fn rollups(store: &Store) -> Vec<RollupRow> {
    let mut st = store
        .conn()
        .prepare(
            "SELECT source, dim, client, span, bucket, k1, k2, k3, connections, packets, bytes_up, bytes_down
             FROM rollup WHERE connections != 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn an_imports_roll_ups_equal_a_rebuild_from_its_rows_however_often_it_sweeps() {
    // A sweep every 2 frames: flows are written in several sweeps, the first write without
    // reading the row (new bytes), the later ones over it; and once more read again after an
    // interruption, every row read first.
    for sweep_every in [2, 3, SWEEP_EVERY_FRAMES] {
        let db = temp_db(&format!("import-rollup-{sweep_every}"));
        let file = db.with_file_name("a.pcap");
        write_pcap(&file, &session());
        let mut store = Store::open(&db).unwrap();
        let opts = ImportOptions { sweep_every, ..options("a") };
        import_file(&mut store, &file, &opts, &mut |_| {}).unwrap();
        store.conn().execute("UPDATE imports SET finished = NULL", []).unwrap();
        import_file(&mut store, &file, &opts, &mut |_| {}).unwrap();
        let kept = rollups(&store);
        assert!(!kept.is_empty());
        store.conn().execute_batch("DELETE FROM rollup_rows; DELETE FROM dns_rollup_rows").unwrap();
        crate::store::rollup::rebuild(store.conn()).unwrap();
        assert_eq!(rollups(&store), kept, "sweeping every {sweep_every} frames");
    }
}
