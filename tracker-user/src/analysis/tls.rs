//! TLS first-payload inspection: the ClientHello's server name (SNI) and a "looks like TLS" test.

use tls_parser::{
    SNIType, TlsExtension, TlsRecordType, parse_tls_extension_sni_content, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, parse_tls_record_header,
};

use super::{domain::normalize_hostname, http::is_address};

/// Handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;

/// TLS extension number of server_name (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;

/// Largest legal record body: 2^14 plaintext plus 2048 of expansion (RFC 5246 §6.2.3).
const MAX_RECORD_LEN: u16 = 16_384 + 2_048;

/// True when `payload` starts like a TLS record: handshake (0x16) or application data (0x17),
/// legacy version 3.0 to 3.4, and a plausible length. Used to tell encrypted flows from clear
/// ones on the first payload, so it checks the whole 5-byte header to keep false positives down
/// (a random payload passes with odds of about 1 in 10^6).
pub fn looks_like_tls(payload: &[u8]) -> bool {
    match payload {
        [0x16 | 0x17, 0x03, minor, hi, lo, ..] => {
            let len = u16::from_be_bytes([*hi, *lo]);
            *minor <= 0x04 && len != 0 && len <= MAX_RECORD_LEN
        }
        _ => false,
    }
}

/// The server name from a TLS ClientHello at the start of `payload` (a flow's first TCP payload),
/// normalised like DNS names (lower case, no trailing dot, unusual bytes escaped). A server name
/// that is an IP address (RFC 6066 §3 forbids them, yet some clients send one) is no name and
/// gives `None`.
///
/// The kernel copies at most 1280 bytes and post-quantum key shares make ClientHellos ~1.8 KB, so
/// the hello is usually cut short. tls-parser's full-record parsers insist on complete input, so
/// this uses its pieces instead: the record header, the ClientHello's fixed fields, then the
/// extensions one at a time until the bytes run out. The SNI is found whenever its extension lies
/// entirely inside the captured bytes; if it lies after the cut (browsers shuffle extension
/// order), the answer is `None`. Never panics; any malformation yields `None`.
pub fn client_hello_sni(payload: &[u8]) -> Option<String> {
    let handshake = handshake_bytes(payload)?;
    let (&msg_type, rest) = handshake.split_first()?;
    if msg_type != CLIENT_HELLO || rest.len() < 3 {
        return None;
    }
    let declared = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
    let body = &rest[3..];
    let body = &body[..declared.min(body.len())];

    // With a complete hello, `ext` holds the extensions block. With a cut one, tls-parser's
    // optional-extensions parser gives up and leaves the input at the block's 2-byte length,
    // which is exactly where the partial walk below can take over.
    let (after_fixed, hello) = parse_tls_handshake_client_hello(body).ok()?;
    let extensions = if let Some(ext) = hello.ext {
        ext
    } else {
        let (len, ext) = after_fixed.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        &ext[..len.min(ext.len())]
    };
    find_sni(extensions)
}

/// The handshake-protocol bytes at the start of `payload`: the bodies of the leading handshake
/// records concatenated (a hello may be split over records), the last one possibly cut short.
fn handshake_bytes(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut input = payload;
    while !input.is_empty() {
        let Ok((body, header)) = parse_tls_record_header(input) else {
            break;
        };
        if header.record_type != TlsRecordType::Handshake || header.len > MAX_RECORD_LEN {
            break;
        }
        let take = usize::from(header.len).min(body.len());
        out.extend_from_slice(&body[..take]);
        input = &body[take..];
    }
    (!out.is_empty()).then_some(out)
}

/// Walks the extensions generically (type, length, data) so that one extension tls-parser finds
/// malformed does not hide the others, and decodes only server_name.
fn find_sni(mut extensions: &[u8]) -> Option<String> {
    while let Ok((rest, ext)) = parse_tls_extension_unknown(extensions) {
        if let TlsExtension::Unknown(ext_type, data) = ext
            && ext_type.0 == EXT_SERVER_NAME
        {
            let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(data) else {
                return None;
            };
            return names
                .iter()
                .find(|(kind, _)| *kind == SNIType::HostName)
                .and_then(|(_, name)| normalize_hostname(name))
                .filter(|name| !is_address(name));
        }
        extensions = rest;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a TLS 1.3-style ClientHello record; `extensions` are (type, data) pairs in order.
    pub(crate) fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (ty, data) in extensions {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&u16::try_from(data.len()).expect("ext len").to_be_bytes());
            ext.extend_from_slice(data);
        }
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[0x5a; 32]); // random
        hello.push(32);
        hello.extend_from_slice(&[0xa5; 32]); // legacy session id
        hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
        hello.extend_from_slice(&[0x01, 0x00]); // null compression
        hello.extend_from_slice(&u16::try_from(ext.len()).expect("len").to_be_bytes());
        hello.extend_from_slice(&ext);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&u32::try_from(hello.len()).expect("len").to_be_bytes()[1..]);
        hs.extend_from_slice(&hello);
        record(0x16, &hs)
    }

    fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut rec = vec![content_type, 0x03, 0x01];
        rec.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
        rec.extend_from_slice(body);
        rec
    }

    pub(crate) fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0x00];
        entry.extend_from_slice(&u16::try_from(name.len()).expect("len").to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = u16::try_from(entry.len()).expect("len").to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (0, data)
    }

    fn grease() -> (u16, Vec<u8>) {
        (0x3a3a, vec![])
    }

    fn key_share(len: usize) -> (u16, Vec<u8>) {
        // X25519MLKEM768 is 1216 bytes of client share; the exact content is irrelevant here.
        let mut data = u16::try_from(len + 4).expect("len").to_be_bytes().to_vec();
        data.extend_from_slice(&[0x11, 0xec]);
        data.extend_from_slice(&u16::try_from(len).expect("len").to_be_bytes());
        data.extend(std::iter::repeat_n(0x42, len));
        (51, data)
    }

    fn supported_versions() -> (u16, Vec<u8>) {
        (43, vec![0x04, 0x03, 0x04, 0x03, 0x03])
    }

    /// A real ClientHello: `openssl s_client -servername Real.Example.COM` (OpenSSL 3.0,
    /// Debian 12) captured on loopback. SNI is the first extension here.
    const OPENSSL_HELLO_HEX: &str = concat!(
        "160301013d0100013903036da0c310896c1495a554f2032df76557affc7284f47e2a54c8f79e52ee8584f420763f3a91",
        "47498a55d0cb19877bcdba96f0f6492e8d1c7311c75a6f6a021d624c003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000b2",
        "0000001500130000105265616c2e4578616d706c652e434f4d000b000403000102000a00160014001d0017001e001900",
        "1801000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b080408",
        "050806040105010601030303010302040205020602002b0009080304030303020301002d00020101003300260024001d",
        "00200eafa0c40ee62bb0bda81794ce50a199296f67510a91f0ea95b87563766f5650",
    );

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn sni_from_a_real_openssl_hello() {
        let hello = unhex(OPENSSL_HELLO_HEX);
        assert_eq!(hello.len(), 322);
        assert!(looks_like_tls(&hello));
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("real.example.com"));
        // The SNI extension ends at byte 169; every cut from there on still finds it.
        for cut in 169..hello.len() {
            assert_eq!(client_hello_sni(&hello[..cut]).as_deref(), Some("real.example.com"));
        }
        for cut in 0..169 {
            assert_eq!(client_hello_sni(&hello[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn sni_from_a_complete_hello() {
        let hello = client_hello(&[grease(), sni_ext(b"www.Example.com"), supported_versions()]);
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("www.example.com"));
        assert!(looks_like_tls(&hello));
    }

    /// Some clients put the address in the SNI when connecting to one: it is no name.
    #[test]
    fn an_address_in_the_sni_is_no_name() {
        for sni in [&b"203.0.113.10"[..], b"2001:db8::1", b"[2001:db8::1]", b"127.1", b"203.0.113.10."] {
            let hello = client_hello(&[sni_ext(sni)]);
            assert_eq!(client_hello_sni(&hello), None, "{}", String::from_utf8_lossy(sni));
        }
        let hello = client_hello(&[sni_ext(b"10.example.net")]);
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("10.example.net"));
    }

    #[test]
    fn sni_survives_a_cut_after_the_sni_extension() {
        let hello = client_hello(&[grease(), sni_ext(b"cut.example.org"), supported_versions(), key_share(1216)]);
        assert!(hello.len() > 1280);
        for cut in [1280, 400, 200] {
            assert_eq!(client_hello_sni(&hello[..cut]).as_deref(), Some("cut.example.org"), "cut at {cut}");
        }
        // Cut inside the SNI extension itself: nothing trustworthy to report.
        let sni_end = hello.windows(15).position(|w| w == b"cut.example.org").expect("name");
        assert_eq!(client_hello_sni(&hello[..sni_end + 10]), None);
    }

    #[test]
    fn sni_after_the_cut_is_not_found() {
        let hello = client_hello(&[key_share(1216), sni_ext(b"late.example.org")]);
        assert_eq!(client_hello_sni(&hello[..1280]), None);
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("late.example.org"));
    }

    #[test]
    fn hello_split_over_two_records() {
        let hello = client_hello(&[sni_ext(b"split.example"), supported_versions()]);
        let hs = &hello[5..];
        let (a, b) = hs.split_at(20);
        let mut two = record(0x16, a);
        two.extend_from_slice(&record(0x16, b));
        assert_eq!(client_hello_sni(&two).as_deref(), Some("split.example"));
    }

    #[test]
    fn malformed_extension_before_sni_is_skipped() {
        // A supported_versions extension whose content is nonsense for tls-parser.
        let hello = client_hello(&[(43, vec![0xff]), sni_ext(b"after.bad.example")]);
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("after.bad.example"));
    }

    #[test]
    fn no_sni_or_not_a_hello() {
        assert_eq!(client_hello_sni(&client_hello(&[supported_versions()])), None);
        assert_eq!(client_hello_sni(b""), None);
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(client_hello_sni(&[0x16, 0x03, 0x01, 0x00]), None);
        // A ServerHello (type 2) is not a ClientHello.
        let mut hello = client_hello(&[sni_ext(b"x.example")]);
        hello[5] = 2;
        assert_eq!(client_hello_sni(&hello), None);
        // Application data, not handshake.
        let mut hello = client_hello(&[sni_ext(b"x.example")]);
        hello[0] = 0x17;
        assert_eq!(client_hello_sni(&hello), None);
    }

    #[test]
    fn invalid_server_names_are_rejected_or_escaped() {
        assert_eq!(client_hello_sni(&client_hello(&[sni_ext(b"")])), None);
        assert_eq!(client_hello_sni(&client_hello(&[sni_ext(b"a..b")])), None);
        assert_eq!(
            client_hello_sni(&client_hello(&[sni_ext(b"evil\x1b[2J.example.")])).as_deref(),
            Some("evil\\027[2j.example")
        );
    }

    #[test]
    fn every_prefix_and_random_corruption_is_safe() {
        let hello = client_hello(&[grease(), sni_ext(b"fuzz.example"), key_share(64)]);
        for cut in 0..=hello.len() {
            let _ = client_hello_sni(&hello[..cut]);
            let _ = looks_like_tls(&hello[..cut]);
        }
        // Deterministic xorshift so the test is reproducible without a rand dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut bytes = hello.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let pos = usize::try_from(state % bytes.len() as u64).expect("index");
                bytes[pos] = state.to_be_bytes()[3];
            }
            let _ = client_hello_sni(&bytes);
        }
    }

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x17, 0x03, 0x03, 0x00, 0x20, 0xaa]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x00, 0x00, 0x01]));
        assert!(!looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02]));
        assert!(!looks_like_tls(&[0x16, 0x02, 0x01, 0x00, 0x10]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05, 0x00, 0x10]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x01, 0x00, 0x00]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x01, 0xff, 0xff]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
        assert!(!looks_like_tls(b""));
    }
}
