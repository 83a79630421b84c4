//! The fuzz targets' bodies on stable, in seconds: every seed (payloads of the shared captures
//! as the importer's events, and a few built here) and a fixed number of deterministic
//! mutations of each, with the same contract checks as `cargo xtask fuzz`.

use etherparse::PacketBuilder;
use tracker_common::{IPPROTO_TCP, IPPROTO_UDP, user::Event};

use super::*;
use crate::analysis::dns::tests::{Msg, wire};
use crate::analysis::entity::BUILTIN;
use crate::analysis::quic::tests::rfc9001_client_initial;
use crate::analysis::tls::tests::{client_hello, sni_ext};
use crate::source::capture::file::tests::pcaps_dir;

/// Mutants made of each seed, per target: enough to reach past the first bytes of every
/// seed, few enough for a debug build to finish in seconds.
const MUTANTS_PER_SEED: usize = 100;
/// Capture files are large and read three times per input: fewer mutants of each.
const CAPTURE_MUTANTS_PER_SEED: usize = 12;
/// Payload seeds kept per target: the captures hold hundreds of near-identical DNS messages.
const MAX_SEEDS: usize = 150;
/// Bytes the text mutations insert: what changes a line's or a TOML file's structure.
const TEXT_BYTES: &[u8] = b"\n\r#. \t=[]\"',:0";

/// The deterministic generator of the mutations (xorshift64, as the QUIC tests use).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`: a bit flipped, a byte set, bytes inserted (random or
/// structural), a range removed or repeated, or the end cut off.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = rng.below(256) as u8,
            2 => out.insert(at, rng.below(256) as u8),
            3 => out.insert(at, TEXT_BYTES[rng.below(TEXT_BYTES.len())]),
            4 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                if rng.below(2) == 0 {
                    out.drain(at.min(end)..end);
                } else {
                    out.splice(at..at, piece);
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Runs `check` on every seed and on `per_seed` mutants of each; returns how many inputs ran.
fn run(name: &str, seeds: &[Vec<u8>], per_seed: usize, check: fn(&[u8])) -> usize {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let mut inputs = 0;
    for seed in seeds {
        check(seed);
        for _ in 0..per_seed {
            check(&mutate(seed, &mut rng));
        }
        inputs += 1 + per_seed;
    }
    inputs
}

/// Seeds taken from the shared captures: the DNS messages and first payloads the importer
/// hands the pipeline, the QUIC datagrams among them, and the files whole.
#[derive(Default)]
struct Seeds {
    dns: Vec<Vec<u8>>,
    tcp_first: Vec<Vec<u8>>,
    udp_first: Vec<Vec<u8>>,
    files: Vec<Vec<u8>>,
}

fn capture_seeds() -> Seeds {
    let mut seeds = Seeds::default();
    let Some(dir) = pcaps_dir() else {
        println!("skipped the shared captures as seeds: ../shared/testdata/pcaps not found");
        return seeds;
    };
    let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("list pcaps").map(|e| e.expect("entry").path()).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"));
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).expect("read capture");
        let mut reader = CaptureReader::new(path.display().to_string(), &bytes[..]).expect("capture header");
        let mut source = CaptureSource::new("seeds".into(), Vec::new(), Timeouts::default());
        // The shared captures are read to their first damage, as import-pcap reads them.
        while let Ok(Some(frame)) = reader.next_frame() {
            source.count(&frame);
            source.drain_events(&mut |event| match event {
                Ok(Event::Dns(p)) => seeds.dns.push(p.data.to_vec()),
                Ok(Event::FirstPayload(p)) if p.header.key.protocol == IPPROTO_TCP => {
                    seeds.tcp_first.push(p.data.to_vec())
                }
                Ok(Event::FirstPayload(p)) if p.header.key.protocol == IPPROTO_UDP => {
                    seeds.udp_first.push(p.data.to_vec())
                }
                _ => {}
            });
        }
        seeds.files.push(bytes);
    }
    for list in [&mut seeds.dns, &mut seeds.tcp_first, &mut seeds.udp_first] {
        list.sort();
        list.dedup();
        // Spread over the captures rather than the first ones only.
        let step = list.len().div_ceil(MAX_SEEDS).max(1);
        *list = list.iter().step_by(step).cloned().collect();
    }
    seeds
}

/// A DNS response built here: a CNAME chain to an address, and a name with odd bytes.
fn dns_seed() -> Vec<u8> {
    let target = wire("edge.cdn.example.net");
    Msg::new(0x1234, 0x8180, [1, 2, 0, 0])
        .question(&wire("www.example.com"), 1)
        .rr(&wire("www.example.com"), 5, 300, &target)
        .rr(&wire("edge.cdn.example.net"), 1, 60, &[192, 0, 2, 7])
        .bytes
}

/// A capture file built here: a pcap of one raw IPv4 UDP DNS query.
fn capture_seed() -> Vec<u8> {
    let mut packet = Vec::new();
    let query = Msg::new(7, 0x0100, [1, 0, 0, 0]).question(&wire("www.example.com"), 1).bytes;
    PacketBuilder::ipv4([10, 0, 0, 2], [192, 0, 2, 53], 64).udp(40_000, 53).write(&mut packet, &query).unwrap();
    let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0];
    for field in [1_700_000_000, 5, packet.len() as u32, packet.len() as u32] {
        file.extend_from_slice(&u32::to_le_bytes(field));
    }
    file.extend_from_slice(&packet);
    file
}

/// A TLS ClientHello with a server name, and the plaintext of a QUIC Initial carrying its
/// handshake message in one CRYPTO frame (the input form [`quic_initial`] protects itself).
fn hello_seeds() -> (Vec<u8>, Vec<u8>) {
    let record = client_hello(&[sni_ext(b"www.Example.com")]);
    let handshake = &record[5..];
    let mut frames = vec![QUIC_FRAMES, 0x06, 0x00];
    frames.extend_from_slice(&(0x4000 | handshake.len() as u16).to_be_bytes());
    frames.extend_from_slice(handshake);
    (record, frames)
}

/// Blobs of each packed kind, small enough that mutants reach past their headers.
fn packed_seeds() -> Vec<Vec<u8>> {
    use crate::store::{packed, packed_dns, packed_flows, rollup};
    let groups: packed::FlowGroups = (0..6i64)
        .map(|i| {
            let c = rollup::Counts { connections: i, packets: 2 * i, bytes_up: 300 * i, bytes_down: 9_000 };
            ([i * 5 + 1, i % 2, 0], c)
        })
        .collect();
    let names: packed::DnsNames = (0..4i64)
        .map(|i| (i + 3, rollup::NameCounts { queries: i + 1, first_ts: i, last_ts: 99 * i, client_bits: 1 << i }))
        .collect();
    let mut flows: Vec<packed_flows::Row> = (0..5i64)
        .map(|i| {
            let mut r = [Some(i % 3); packed_flows::COLUMNS.len()];
            (r[0], r[13], r[14], r[15]) = (Some(i + 10), Some(1_800_000_000_000 + i), Some(1_800_000_000_900), None);
            r
        })
        .collect();
    let mut queries: Vec<packed_dns::Query> = (0..3i64)
        .map(|i| {
            let mut q = [Some(7); packed_dns::QUERY_COLUMNS.len()];
            (q[0], q[1], q[2]) =
                (Some(i + 1), Some(1_800_000_000_000 + i), if i == 1 { None } else { Some(1_800_000_000_020) });
            q
        })
        .collect();
    let mut answers = vec![[1, 0, 4, 5, 60, 6], [1, 1, 4, 5, 60, 8], [3, 0, 9, 5, 30, 2]];
    vec![
        packed::pack_flows(&groups),
        packed::pack_dns(&names),
        packed_flows::pack(&mut flows).unwrap(),
        packed_dns::pack(&mut queries, &mut answers).unwrap(),
    ]
}

#[test]
fn seeds_and_their_mutants_keep_every_contract() {
    let seeds = capture_seeds();
    let (hello, quic_frames) = hello_seeds();
    let http = b"GET /a HTTP/1.1\r\nUser-Agent: t\r\nHost: Www.Example.COM.:8080\r\n\r\n".to_vec();
    let hosts = b"# a hosts file\n0.0.0.0 ads.example.com tracker.example.net\n127.0.0.1 localhost\n\
                  ::1 ip6-localhost\nmetrics.example.org\n0.0.0.0 ads.example.com\n"
        .to_vec();
    // The captures' DNS questions as a plain list: real names, real oddities.
    let mut questions: Vec<u8> = Vec::new();
    for m in seeds.dns.iter().filter_map(|d| dns::parse(d, Transport::Udp).ok()) {
        for q in m.questions {
            questions.extend_from_slice(q.name.as_bytes());
            questions.push(b'\n');
        }
    }
    let overrides =
        b"[[company]]\nname = \"Example\"\ncategory = \"cdn\"\ndomains = [\"example.net\", \"apple.com\"]\n\n\
          [[service]]\nname = \"Ex\"\ncompany = \"Example\"\ndomains = [\"api.example.net\"]\n"
            .to_vec();

    let dns_seeds = [seeds.dns.clone(), vec![dns_seed()]].concat();
    let tcp = [seeds.tcp_first.clone(), vec![hello.clone(), http.clone()]].concat();
    let quic = [seeds.udp_first.clone(), vec![rfc9001_client_initial(), quic_frames]].concat();
    let files = [seeds.files.clone(), vec![capture_seed()]].concat();
    let lists = [vec![hosts], (!questions.is_empty()).then_some(questions).into_iter().collect()].concat();
    let tables = vec![BUILTIN.as_bytes().to_vec(), overrides];
    let configs = vec![
        b"db = \"/srv/tracker/tracker.db\"\nlog = \"info\"\n[run]\niface = \"wg1\"\nkeep-attached = true\n\
          sweep-interval = 2\nlocal-net = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n"
            .to_vec(),
    ];

    let ran = [
        ("dns", run("dns", &dns_seeds, MUTANTS_PER_SEED, dns)),
        ("tls_client_hello", run("tls", &tcp, MUTANTS_PER_SEED, tls_client_hello)),
        ("http_host", run("http", &tcp, MUTANTS_PER_SEED, http_host)),
        ("quic_initial", run("quic", &quic, MUTANTS_PER_SEED, quic_initial)),
        ("capture", run("capture", &files, CAPTURE_MUTANTS_PER_SEED, capture)),
        ("blocklist", run("blocklist", &lists, MUTANTS_PER_SEED * 10, blocklist)),
        ("entities", run("entities", &tables, MUTANTS_PER_SEED * 5, entities)),
        ("config", run("config", &configs, MUTANTS_PER_SEED * 5, config)),
        ("packed", run("packed", &packed_seeds(), MUTANTS_PER_SEED * 5, packed)),
    ];
    println!("inputs per target: {ran:?}");
}

#[test]
fn the_seeds_reach_the_parsers_answers() {
    // The checks above are only as good as the inputs that get past each parser's first test.
    let (hello, quic_frames) = hello_seeds();
    assert_eq!(tls::client_hello_sni(&hello).as_deref(), Some("www.example.com"));
    let packet = quic::protect_v1(&QUIC_DCID, &quic_frames[1..]);
    assert_eq!(quic::initial_sni(&packet).as_deref(), Some("www.example.com"));
    assert_eq!(quic::initial_sni(&rfc9001_client_initial()).as_deref(), Some("example.com"));
    let msg = dns::parse(&dns_seed(), Transport::Udp).unwrap();
    assert_eq!(msg.cname_chain("www.example.com"), ["edge.cdn.example.net"]);
    let file = capture_seed();
    let mut reader = CaptureReader::new("seed", &file[..]).unwrap();
    let frame = reader.next_frame().unwrap().unwrap();
    let mut source = CaptureSource::new("t".into(), Vec::new(), Timeouts::default());
    assert_eq!(source.count(&frame), Counted::Ip);
    assert_eq!(source.pending_events(), 1, "the query is kept as a DNS event");
}

#[test]
fn canonical_names_are_decoded_and_others_refused() {
    assert_eq!(check_canonical_name("a\\.b.c\\255\\\\"), [b"a.b".to_vec(), b"c\xff\\".to_vec()]);
    assert!(check_canonical_name(".").is_empty());
    for bad in ["", "a..b", "a.", "A.b", "a b", "a\\25", "a(b", "a\\", &format!("{}.b", "x".repeat(64))] {
        assert!(canonical_labels(bad).is_err(), "{bad:?} was taken for a canonical name");
    }
}

/// Inputs `cargo xtask fuzz` found, minimized by libFuzzer, each with the fix it led to.
#[test]
fn inputs_the_fuzzer_found() {
    // packed, 2026-12-08, 3,218,795 executions in: a DNS day whose answers' column declared
    // more bytes than the blob had. The answer counts were checked against that length before
    // it was checked against the bytes, and the reader asked for 83 GB. Every length is now
    // checked first. This blob (stored, one query, a billion answers, a column of 2^40 bytes
    // declared) is the crash's shape.
    let zigzag = |v: i64, out: &mut Vec<u8>| {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push(z as u8 | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    let mut blob = vec![3u8];
    zigzag(1, &mut blob);
    let (queries, answers) =
        (crate::store::packed_dns::QUERY_COLUMNS.len(), crate::store::packed_dns::ANSWER_COLUMNS.len());
    for _ in 0..queries {
        zigzag(1, &mut blob);
    }
    zigzag(5, &mut blob);
    zigzag(1 << 40, &mut blob);
    for _ in 2..answers {
        zigzag(0, &mut blob);
    }
    blob.extend(std::iter::repeat_n(2u8, queries));
    zigzag(1_000_000_000, &mut blob);
    packed(&blob);
    let err = crate::store::packed_dns::unpack(&blob).unwrap_err().to_string();
    assert!(err.contains("columns are not its bytes"), "{err}");

    // quic_initial, 2026-12-07: a ClientHello in a CRYPTO frame whose server_name is six dots
    // (then stray bytes). QUIC's own normalisation dropped one dot and kept "....." (a name
    // ending with a dot, of empty labels), where TLS refuses it; QUIC now normalises as TLS.
    let quic_sni_of_dots: &[u8] = &[
        0x01, 0x06, 0x00, 0x40, 0x47, 0x01, 0x00, 0x00, 0x43, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
        0x5a, 0x5a, 0x25, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
        0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x18, 0x00, 0x00,
        0x00, 0x14, 0x00, 0x12, 0x00, 0x00, 0x06, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x77, 0x77, 0x77,
        0x2e, 0x63, 0x6f, 0x6d,
    ];
    quic_initial(quic_sni_of_dots);
    assert_eq!(quic::initial_sni(&quic::protect_v1(&QUIC_DCID, &quic_sni_of_dots[1..])), None);

    // blocklist, 2026-12-07: the line `0..`. canonical_domain dropped one final dot and let the
    // second through as `0.`: not in canonical form, past the one-label test (it has a dot),
    // and hashed by the kernel as the whole top-level `0` (`lan..` blocked all of `lan`). It
    // is now an empty label.
    let two_dots = b"0..";
    blocklist(two_dots);
    let parsed = blocklist::parse(two_dots);
    assert_eq!((parsed.domains.len(), parsed.malformed.len()), (0, 1));
    assert!(blocklist::parse(b"lan..\n0.0.0.0 ads.example.com..\n").domains.is_empty());

    // config, 2026-12-07, 2,656,030 executions in: a switch set to false (`no-dashboard =
    // false`) adds no option but was recorded as coming from the file. Only options it adds are.
    config(b"db = \"/var/lib/tracker/tracker.db\"\n[run]\niface = \"wg0\"\nno-dashboard = false\nlocal-net = []\n");
}
