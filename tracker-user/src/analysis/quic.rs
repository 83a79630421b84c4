//! QUIC first-payload inspection: the server name (SNI) inside a client's first Initial packet.
//!
//! Initial packets are encrypted, but with keys anyone can derive from the packet's own Destination
//! Connection ID (RFC 9001 §5.2), so an on-path observer can read the TLS ClientHello they carry.
//! Every step takes untrusted bytes and gives up with `None` rather than panicking.

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::domain::normalize_hostname;
use super::http::is_address;

/// What differs between QUIC versions as far as client Initial packets go.
struct Version {
    id: u32,
    salt: [u8; 20],
    /// HKDF labels for the AEAD key, IV and header protection key.
    labels: [&'static [u8]; 3],
    /// Long-header packet type bits (0x30 of the first byte) that mean Initial.
    initial_type: u8,
}

/// QUIC v1: initial_salt and labels from RFC 9001 §5.1-5.2, Initial type 0b00 from RFC 9000 §17.2.
const V1: Version = Version {
    id: 0x0000_0001,
    salt: *b"\x38\x76\x2c\xf7\xf5\x59\x34\xb3\x4d\x17\x9a\xe6\xa4\xc8\x0c\xad\xcc\xbb\x7f\x0a",
    labels: [b"quic key", b"quic iv", b"quic hp"],
    initial_type: 0b00,
};
/// QUIC v2: salt (§3.3.1), labels (§3.3.2) and Initial type 0b01 (§3.2) from RFC 9369.
const V2: Version = Version {
    id: 0x6b33_43cf,
    salt: *b"\x0d\xed\xe3\xde\xf7\x00\xa6\xdb\x81\x93\x81\xbe\x6e\x26\x9d\xcb\xf9\xbd\x2e\xd9",
    labels: [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
    initial_type: 0b01,
};
/// draft-ietf-quic-tls-29 §5.2, still spoken by some older clients: v1's layout, its own salt.
const DRAFT_29: Version = Version {
    id: 0xff00_001d,
    salt: *b"\xaf\xbf\xec\x28\x99\x93\xd2\x4c\x9e\x97\x86\xf1\x9c\x61\x11\xe0\x43\x90\xa8\x99",
    ..V1
};

/// HKDF label of the client's Initial secret (RFC 9001 §5.2).
const LABEL_CLIENT_IN: &[u8] = b"client in";
/// Every TLS 1.3 HKDF label starts with this (RFC 8446 §7.1).
const TLS13_LABEL_PREFIX: &[u8] = b"tls13 ";
/// Secret, AES-128-GCM key (also the header protection key) and IV sizes of the Initial suite,
/// TLS_AES_128_GCM_SHA256 (RFC 9001 §5.2, §5.3).
const SECRET_LEN: usize = 32;
const KEY_LEN: usize = 16;
const IV_LEN: usize = 12;

/// Header form (long) and fixed bit, both set on every v1/v2 long header (RFC 9000 §17.2).
const LONG_HEADER_BITS: u8 = 0xc0;
/// Connection IDs are at most 20 bytes in v1 and v2 (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;
/// Header protection samples 16 bytes, starting 4 bytes after the packet number's start, as if
/// the packet number were 4 bytes long (RFC 9001 §5.4.2).
const SAMPLE_OFFSET: usize = 4;
const SAMPLE_LEN: usize = 16;

/// Frame types that may appear in a client Initial (RFC 9000 §12.4, §19).
const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;

/// Handshake type of ClientHello (RFC 8446 §4); server_name extension and its host_name entry
/// (RFC 6066 §3).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u64 = 0;
const NAME_TYPE_HOST_NAME: u64 = 0;

/// The server name of a QUIC client's first Initial packet (v1, v2, draft-29), or None when the
/// payload is not such a packet, cannot be decrypted, or its CRYPTO data starting at offset 0 does
/// not reach the server_name extension. Never panics on any input.
pub fn initial_sni(payload: &[u8]) -> Option<String> {
    let plaintext = decrypt_initial(payload)?;
    sni_from_client_hello(&crypto_stream(&plaintext))
}

/// A cursor over untrusted bytes whose reads fail, instead of panicking, past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&byte, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(byte)
    }

    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_at_checked(len)?;
        self.buf = rest;
        Some(head)
    }

    /// A big-endian unsigned integer of `size` (at most 8) bytes.
    fn uint(&mut self, size: usize) -> Option<u64> {
        Some(self.bytes(size)?.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A variable-length integer: the first byte's top two bits give its length (RFC 9000 §16).
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let rest = self.bytes((1usize << (first >> 6)) - 1)?;
        Some(rest.iter().fold(u64::from(first & 0x3f), |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A field preceded by its length: a varint (`None`) or a TLS vector's `Some(size)` bytes.
    fn prefixed(&mut self, size: Option<usize>) -> Option<&'a [u8]> {
        let len = match size {
            None => self.varint()?,
            Some(size) => self.uint(size)?,
        };
        self.bytes(usize::try_from(len).ok()?)
    }
}

/// The client's Initial packet protection keys.
struct InitialKeys {
    key: [u8; KEY_LEN],
    iv: [u8; IV_LEN],
    hp: [u8; KEY_LEN],
}

/// Tells ring how many bytes an HKDF-Expand should produce.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1): info is the output length, then the
/// label with its "tls13 " prefix, then the context, each with its length in front.
fn expand_label<const N: usize>(prk: &hkdf::Prk, label: &[u8]) -> Option<[u8; N]> {
    let out_len = u16::try_from(N).ok()?.to_be_bytes();
    let label_len = [u8::try_from(TLS13_LABEL_PREFIX.len() + label.len()).ok()?];
    let info: [&[u8]; 5] = [&out_len, &label_len, TLS13_LABEL_PREFIX, label, &[0]];
    let mut out = [0u8; N];
    prk.expand(&info, OkmLen(N)).ok()?.fill(&mut out).ok()?;
    Some(out)
}

/// The client Initial keys for `dcid`, the Destination Connection ID of the client's first
/// Initial (RFC 9001 §5.2).
fn client_initial_keys(version: &Version, dcid: &[u8]) -> Option<InitialKeys> {
    let initial_secret = hkdf::Salt::new(hkdf::HKDF_SHA256, &version.salt).extract(dcid);
    let client_secret: [u8; SECRET_LEN] = expand_label(&initial_secret, LABEL_CLIENT_IN)?;
    let client = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &client_secret);
    let [key, iv, hp] = version.labels;
    Some(InitialKeys {
        key: expand_label(&client, key)?,
        iv: expand_label(&client, iv)?,
        hp: expand_label(&client, hp)?,
    })
}

/// The decrypted payload (frames) of the Initial packet at the start of `payload`. Packets
/// coalesced after it are ignored; a packet cut short by the capture fails authentication.
fn decrypt_initial(payload: &[u8]) -> Option<Vec<u8>> {
    let mut reader = Reader { buf: payload };
    let first = reader.u8()?;
    if first & LONG_HEADER_BITS != LONG_HEADER_BITS {
        return None;
    }
    let id = u32::from_be_bytes(reader.bytes(4)?.try_into().ok()?);
    let version = [V1, V2, DRAFT_29].into_iter().find(|v| v.id == id)?;
    // The packet type sits in bits 4-5, which header protection leaves alone (RFC 9001 §5.4.1).
    if (first >> 4) & 0b11 != version.initial_type {
        return None;
    }
    let dcid = reader.prefixed(Some(1))?;
    let scid = reader.prefixed(Some(1))?;
    if dcid.len() > MAX_CID_LEN || scid.len() > MAX_CID_LEN {
        return None;
    }
    let _token = reader.prefixed(None)?;
    // Length covers the packet number and the protected payload, and so ends this packet.
    let length = usize::try_from(reader.varint()?).ok()?;
    let pn_offset = payload.len() - reader.buf.len();
    let packet = payload.get(..pn_offset.checked_add(length)?)?;
    let sample = packet.get(pn_offset + SAMPLE_OFFSET..pn_offset + SAMPLE_OFFSET + SAMPLE_LEN)?;

    let keys = client_initial_keys(&version, dcid)?;
    let [mask_first, mask_pn @ ..] = HeaderProtectionKey::new(&AES_128, &keys.hp).ok()?.new_mask(sample).ok()?;
    // Long headers protect only the low four bits of the first byte (RFC 9001 §5.4.1); the low
    // two then give the packet number length.
    let first = first ^ (mask_first & 0x0f);
    let pn_len = usize::from(first & 0b11) + 1;
    let mut header = packet.get(..pn_offset + pn_len)?.to_vec();
    *header.first_mut()? = first;
    let mut packet_number = 0u64;
    for (byte, mask) in header.get_mut(pn_offset..)?.iter_mut().zip(mask_pn) {
        *byte ^= mask;
        packet_number = (packet_number << 8) | u64::from(*byte);
    }
    // The nonce is the IV with the packet number XORed into its low bytes (RFC 9001 §5.3).
    let mut nonce = keys.iv;
    for (n, p) in nonce.iter_mut().rev().zip(packet_number.to_be_bytes().iter().rev()) {
        *n ^= p;
    }
    let mut body = packet.get(pn_offset + pn_len..)?.to_vec();
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &keys.key).ok()?);
    let plain_len = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&header), &mut body).ok()?.len();
    body.truncate(plain_len);
    Some(body)
}

/// The CRYPTO stream bytes that are contiguous from offset 0, from the frames of one Initial.
/// Chrome splits its ClientHello into several CRYPTO frames and shuffles them, so frames are
/// collected first and stitched by offset. The walk stops at the first frame it does not expect
/// in a client's Initial (including CONNECTION_CLOSE) or cannot parse.
fn crypto_stream(frames: &[u8]) -> Vec<u8> {
    let mut reader = Reader { buf: frames };
    let mut chunks: Vec<(u64, &[u8])> = Vec::new();
    while let Some(frame_type) = reader.varint() {
        let parsed = match frame_type {
            FRAME_PADDING | FRAME_PING => Some(()),
            FRAME_ACK | FRAME_ACK_ECN => skip_ack(&mut reader, frame_type == FRAME_ACK_ECN),
            FRAME_CRYPTO => reader.varint().zip(reader.prefixed(None)).map(|chunk| chunks.push(chunk)),
            _ => None,
        };
        if parsed.is_none() {
            break;
        }
    }
    let mut stream = Vec::new();
    // Each pass appends a chunk that starts at or before the end so far and reaches past it.
    while let Some(more) = chunks.iter().find_map(|&(offset, data)| {
        let skip = usize::try_from(u64::try_from(stream.len()).ok()?.checked_sub(offset)?).ok()?;
        data.get(skip..).filter(|rest| !rest.is_empty())
    }) {
        stream.extend_from_slice(more);
    }
    stream
}

/// Steps over the body of an ACK frame (RFC 9000 §19.3). Each range reads input, so even a huge
/// range count ends when the bytes do.
fn skip_ack(reader: &mut Reader<'_>, ecn: bool) -> Option<()> {
    // Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range; a Gap and an ACK Range
    // Length per further range; with ECN, three counts.
    let [_, _, range_count, _] = [reader.varint()?, reader.varint()?, reader.varint()?, reader.varint()?];
    let ecn_counts = if ecn { 3 } else { 0 };
    for _ in 0..range_count.saturating_mul(2).saturating_add(ecn_counts) {
        reader.varint()?;
    }
    Some(())
}

/// The server name in a ClientHello handshake message at the start of `data`, which may be only a
/// prefix of it: post-quantum key shares push ClientHellos past one Initial packet. Extensions
/// are walked as far as they are complete; server_name counts only if it is whole.
fn sni_from_client_hello(data: &[u8]) -> Option<String> {
    let mut reader = Reader { buf: data };
    if reader.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let _length = reader.bytes(3)?; // not checked: we may hold only part of the message
    let _legacy_version_and_random = reader.bytes(2 + 32)?;
    let _session_id = reader.prefixed(Some(1))?;
    let _cipher_suites = reader.prefixed(Some(2))?;
    let _compression_methods = reader.prefixed(Some(1))?;
    let extensions_len = usize::try_from(reader.uint(2)?).ok()?;
    let mut extensions = Reader { buf: reader.buf.get(..extensions_len).unwrap_or(reader.buf) };
    loop {
        let ext_type = extensions.uint(2)?;
        let body = extensions.prefixed(Some(2))?;
        if ext_type == EXT_SERVER_NAME {
            return host_name(body);
        }
    }
}

/// The first host_name in a server_name extension body (RFC 6066 §3), normalized.
fn host_name(body: &[u8]) -> Option<String> {
    let mut list = Reader { buf: Reader { buf: body }.prefixed(Some(2))? };
    loop {
        let name_type = list.uint(1)?;
        let name = list.prefixed(Some(2))?;
        if name_type == NAME_TYPE_HOST_NAME {
            return normalize(name);
        }
    }
}

/// The server name in the canonical form TLS and HTTP names get ([`normalize_hostname`]: lower
/// case, one trailing dot dropped, no empty label or label over 63 bytes, zone-file specials
/// escaped), so that a name from a QUIC Initial compares equal with the same name from DNS or
/// a ClientHello over TCP. Names with non-printable or space bytes are refused, and so are
/// addresses, which RFC 6066 §3 forbids in SNI (the legacy IPv4 forms too, as [`is_address`]
/// refuses them for TLS).
fn normalize(raw: &[u8]) -> Option<String> {
    if !raw.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    normalize_hostname(raw).filter(|name| !is_address(name))
}

/// A client Initial for `version` carrying `frames`, protected as RFC 9001 §5 says (4-byte
/// packet number 7, no SCID, no token): for the tests the RFCs have no vector for, and for the
/// fuzz target, whose inputs could never pass the AEAD check on their own. `frames` must be
/// at most 16,363 bytes long (the Length field is a 2-byte varint).
#[cfg(any(test, fuzzing))]
fn protect(version: &Version, dcid: &[u8], frames: &[u8]) -> Vec<u8> {
    let keys = client_initial_keys(version, dcid).unwrap();
    let mut packet = vec![LONG_HEADER_BITS | version.initial_type << 4 | 0b11];
    packet.extend(version.id.to_be_bytes());
    packet.push(dcid.len() as u8);
    packet.extend(dcid);
    packet.extend([0, 0]);
    packet.extend((0x4000 | (4 + frames.len() + 16) as u16).to_be_bytes());
    let pn_offset = packet.len();
    packet.extend(7u32.to_be_bytes());
    let mut nonce = keys.iv;
    nonce[IV_LEN - 1] ^= 7;
    let mut body = frames.to_vec();
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &keys.key).unwrap());
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&packet), &mut body).unwrap();
    packet.extend(body);
    let sample = &packet[pn_offset + SAMPLE_OFFSET..][..SAMPLE_LEN];
    let mask = HeaderProtectionKey::new(&AES_128, &keys.hp).unwrap().new_mask(sample).unwrap();
    packet[0] ^= mask[0] & 0x0f;
    packet[pn_offset..pn_offset + 4].iter_mut().zip(&mask[1..]).for_each(|(byte, m)| *byte ^= m);
    packet
}

/// [`protect`] for QUIC v1 with `dcid`: the packet [`initial_sni`] decrypts to `frames`.
#[cfg(any(test, fuzzing))]
pub(crate) fn protect_v1(dcid: &[u8], frames: &[u8]) -> Vec<u8> {
    protect(&V1, dcid, frames)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 9001's client Initial (server name `example.com`), for other modules' tests.
    pub(crate) fn rfc9001_client_initial() -> Vec<u8> {
        unhex(V1_PACKET)
    }

    fn unhex(hex: &str) -> Vec<u8> {
        let hex: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        hex.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// RFC 9001 §A.1 / RFC 9369 §A.1: the Destination Connection ID of both examples.
    const DCID: &str = "8394c8f03e515708";

    /// RFC 9001 §A.2: the protected client Initial, 1200 bytes.
    const V1_PACKET: &str = "\
        c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec356c0bab7df597\
        6d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c8eb7539ec4d4905fed1b\
        ee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58\
        c5457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c2084dce25ff9b06cde535d0f920a2db1bf362c23e59\
        6d11a4f5a6cf3948838a3aec4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fd\
        b41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060\
        ae6c7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4faddfc\
        efc5266ba6611722395c906556be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c7468449a13d8e3b958\
        11a198f3491de3e7fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d\
        90ca00f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632291d6a418211cc2962e20fe47feb3edf330f\
        2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd14de71e6c41855\
        9302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d2\
        0011a198e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009ddc324044e847a4f4a0ab34f719595de3725\
        2d6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77fcb2c0e0eb605\
        cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450efc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33b\
        d801b03adea2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e72404790a2181014f3b94a4e97d117b4381303\
        68cc39dbb2d198065ae3986547926cd2162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e\
        12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb5\
        8b936a88cd4e8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd2207\
        23c8c0aea8078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab760d58a6\
        06654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950\
        bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd46840647e78bfe706ca4cf5e9c5453e9f7c\
        fd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e194cd934";

    /// RFC 9369 §A.2: the protected v2 client Initial, 1200 bytes.
    const V2_PACKET: &str = "\
        d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071bf03dceebfa162e75d6c96058bdbfb\
        127cdfcbf903388e99ad049f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d250f2c4f0e0202b70785\
        b7946e992e58a59ac52dea6774d4f03b55545243cf1a12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda55\
        00cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd6818f6625efce3b6def6ba7e4b37a40f7732e093da\
        a7d52190935b8da58976ff3312ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3d396ae5a3fb512384b\
        2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f\
        6520bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045636e7c0c0fe4eb0f697545460c806910d2c355\
        f1d253bc9d2452aaa549e27a1fac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c1216ccce2d0193f958\
        bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e54df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d\
        77ffb4fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b8017c25ca9052ca1079d8b78aebd47876d33\
        0a30f6a8c6d61dd1ab5589329de714d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff99c63a344d6a2ae\
        8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff\
        325ba3bd80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db848265e3e5eb72dfe8299ad7481a408322\
        cac55786e52f633b2fb6b614eaed18d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15c4d526250235\
        ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f811\
        93e8238e61f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e7071010d3f270121b493ce85054ef58bada42\
        310138fe081adb04e2bd901f2f13458b3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e06ebfde206\
        bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0\
        eed19e3417d134b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1e86215c2d54e6670e07383a27bbffb\
        5addf47d66aa85a0c6f9f32e59d85a44dd5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e38d209d0f\
        a6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd\
        7e19ba58cf4b536f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb199a37ddec600545473cfb5a05e08d\
        0b209973b2172b4d21fb69745a262ccde96ba18b2faa745b6fe189cf772a9f84cbfc";

    /// The ClientHello of RFC 9001 §A.2 (241 bytes, in one CRYPTO frame). server_name is its first
    /// extension and ends 69 bytes in: 4 header, 34 version and random, 1 session id, 6 suites, 2
    /// compression, 2 extensions length, 20 the extension.
    fn rfc_client_hello() -> Vec<u8> {
        crypto_stream(&decrypt_initial(&unhex(V1_PACKET)).unwrap())
    }

    /// A CRYPTO frame with two-byte offset and length varints.
    fn crypto(offset: usize, data: &[u8]) -> Vec<u8> {
        let varint = |n: usize| (0x4000 | n as u16).to_be_bytes();
        [&[0x06][..], &varint(offset), &varint(data.len()), data].concat()
    }

    #[test]
    fn rfc9001_and_rfc9369_a1_client_keys() {
        for (version, key, iv, hp) in [
            (V1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"),
            (V2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"),
        ] {
            let keys = client_initial_keys(&version, &unhex(DCID)).unwrap();
            assert_eq!((keys.key.to_vec(), keys.iv.to_vec(), keys.hp.to_vec()), (unhex(key), unhex(iv), unhex(hp)));
        }
    }

    #[test]
    fn rfc9001_and_rfc9369_a2_client_initials() {
        for packet in [unhex(V1_PACKET), unhex(V2_PACKET)] {
            // The payload is a 245-byte CRYPTO frame then PADDING (RFC 9001 §A.2).
            let frames = decrypt_initial(&packet).unwrap();
            assert_eq!((packet.len(), frames.len(), &frames[..4]), (1200, 1162, &[0x06, 0x00, 0x40, 0xf1][..]));
            assert!(frames[245..].iter().all(|&b| b == 0));
            assert_eq!(initial_sni(&packet).as_deref(), Some("example.com"));
            // A packet coalesced after the first is ignored.
            assert_eq!(initial_sni(&[&packet[..], &[0xff; 100]].concat()).as_deref(), Some("example.com"));
            // Cut short (as by the 1280-byte capture of a larger datagram), or altered: no name.
            assert_eq!(initial_sni(&packet[..1100]), None);
            assert_eq!(initial_sni(&packet[..1199]), None);
            let mut flipped = packet.clone();
            flipped[600] ^= 0x01;
            assert_eq!(initial_sni(&flipped), None);
            // The other version's number: Initial's type bits differ, so it is not an Initial.
            let mut other = packet.clone();
            let swapped = if other[1] == 0 { V2.id } else { V1.id };
            other[1..5].copy_from_slice(&swapped.to_be_bytes());
            assert_eq!(initial_sni(&other), None);
        }
    }

    #[test]
    fn every_version_with_split_reordered_or_partial_hellos() {
        let hello = rfc_client_hello();
        let dcid = [0x5a; MAX_CID_LEN];
        for version in [V1, V2, DRAFT_29] {
            // Chrome-style: the hello in three CRYPTO frames, out of order, among PING, ACK and PADDING.
            let ack = [0x02, 0x05, 0x00, 0x01, 0x00, 0x01, 0x01];
            let frames = [&[0x01][..], &crypto(100, &hello[100..]), &ack, &crypto(0, &hello[..40]), &[0; 20]].concat();
            let mut frames = [frames, crypto(30, &hello[30..100])].concat();
            frames.resize(1100, 0);
            assert_eq!(initial_sni(&protect(&version, &dcid, &frames)).as_deref(), Some("example.com"));
            // A hello continued in the next Initial: enough when server_name is whole.
            let first_part = |cut: usize| protect(&version, &dcid, &[crypto(0, &hello[..cut]), vec![0; 1000]].concat());
            assert_eq!(initial_sni(&first_part(69)).as_deref(), Some("example.com"));
            assert_eq!(initial_sni(&first_part(68)), None);
        }
        // A DCID over 20 bytes is no v1 packet, even if it decrypts.
        assert_eq!(initial_sni(&protect(&V1, &[1; MAX_CID_LEN + 1], &crypto(0, &hello))), None);
        // A gap stops the stream; so does an unexpected frame (here CONNECTION_CLOSE).
        assert_eq!(crypto_stream(&[crypto(50, &hello[50..]), crypto(0, &hello[..30])].concat()), &hello[..30]);
        assert!(crypto_stream(&[vec![0x1c], crypto(0, &hello)].concat()).is_empty());
    }

    #[test]
    fn names_are_normalized_or_rejected() {
        assert_eq!(normalize(b"Example.COM.").as_deref(), Some("example.com"));
        let longest = [&[b'a'; 63][..], b".", &[b'b'; 63], b".", &[b'c'; 63], b".", &[b'd'; 61]].concat();
        assert_eq!(normalize(&longest).map(|n| n.len()), Some(253));
        // Escaped as DNS names are, so the three sources of a name compare equal.
        assert_eq!(normalize(b"a(b.example").as_deref(), Some("a\\(b.example"));
        for bad in [&b""[..], b".", b"10.0.0.1", b"::1", b"[::1]", b"a b", b"a\x00b", b"caf\xc3\xa9", &[b'a'; 254]] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        // Found by `cargo xtask fuzz`: what TLS refuses as no host name, QUIC took as one.
        for bad in [&b"......"[..], b"a..b", b".a", b"a..", &[b'a'; 64], b"203.0.113", b"0x7f.1"] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let v1 = unhex(V1_PACKET);
        let hello = rfc_client_hello();
        for len in 0..64 {
            let _ = (initial_sni(&vec![0; len]), initial_sni(&vec![0xc0; len]), initial_sni(&v1[..len]));
        }
        for cut in 0..=hello.len() {
            let _ = sni_from_client_hello(&hello[..cut]);
        }
        // Deterministic xorshift so the test is reproducible without a rand dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let mut bytes: Vec<u8> = (0..next() % 1300).map(|_| next() as u8).collect();
            if round % 2 == 0 && bytes.len() > 5 {
                // Keep a v1 Initial's first bytes so the fuzzing gets past the version check.
                bytes[..5].copy_from_slice(&v1[..5]);
            }
            let _ = (initial_sni(&bytes), crypto_stream(&bytes), sni_from_client_hello(&bytes));
        }
    }

    #[test]
    fn zeek_quicdoq_pcap() {
        // Found like pcap_tests.rs does: $TRACKER_PCAPS, else shared/ beside the repository.
        let dir = std::env::var_os("TRACKER_PCAPS").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/pcaps"),
            std::path::PathBuf::from,
        );
        let Ok(pcap) = std::fs::read(dir.join("zeek__quic__quicdoq.pcap")) else {
            println!("skipped: zeek__quic__quicdoq.pcap not found in {}", dir.display());
            return;
        };
        // Little-endian microsecond pcap of Ethernet/IPv4/UDP frames, read by hand.
        assert_eq!(pcap[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
        let (mut rest, mut to_server) = (&pcap[24..], Vec::new());
        while rest.len() >= 16 {
            let (frame, next) = rest[16..].split_at(u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize);
            let udp = &frame[14 + usize::from(frame[14] & 0x0f) * 4..];
            if u16::from_be_bytes([udp[2], udp[3]]) == 853 {
                to_server.push(&udp[8..]);
            }
            rest = next;
        }
        // tshark -d udp.port==853,quic shows the client's first datagram as a v1 Initial whose
        // ClientHello has no server_name (DNS over QUIC to 127.0.0.1), then a Handshake packet
        // and two short-header packets: no name anywhere.
        assert_eq!(to_server.len(), 4);
        let stream = crypto_stream(&decrypt_initial(to_server[0]).unwrap());
        assert_eq!(stream[..4], [HANDSHAKE_CLIENT_HELLO, 0, 0, 211]);
        assert_eq!(sni_from_client_hello(&stream), None);
        assert!(to_server.iter().all(|p| initial_sni(p).is_none()));
    }
}
