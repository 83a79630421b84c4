//! Query names as the kernel's name rules see them: the hash of every suffix of a DNS query's
//! name, computed by the XDP program from the packet ([`scan`]) and by userspace from a rule's
//! domain ([`domain_hash`]), so that `braze.com` matches `sdk.iad-01.braze.com` and not
//! `evilbraze.com`.
//!
//! A rule is a hash of the name's wire form (length-prefixed labels, lower-cased, ending in the
//! root's zero byte), and a suffix of a wire-form name is the wire form of the parent name, so
//! suffix matching is exact label matching. The hash is polynomial (`h = h·B + byte + 1`,
//! wrapping), so the hash of every suffix comes out of one backward pass over the name, each
//! byte's suffix hash from the next one's: `H(s[i..]) = (b_i + 1)·B^(n−1−i) + H(s[i+1..])`.
//!
//! The kernel side is three loops with a constant bound and no state that forks: find the labels,
//! hash the suffixes, look them up. One loop doing all three kept a different verifier state
//! alive at every label boundary and ran past the verifier's million-instruction budget.
//!
//! Two different names of at most 255 bytes share a 64-bit hash with odds of about 2^-64 for
//! names no one chose to collide; an engineered collision could only make a name be refused
//! that a rule did not mean, and `tracker blocks` shows every refusal under its rule.

/// Longest name in wire form (RFC 1035 §2.3.4), the terminating zero included.
pub const MAX_NAME: usize = 255;
/// Bytes of [`NameScratch::buf`]: a power of two, so an index masked with `NAME_BUF - 1` is
/// in bounds for the verifier.
pub const NAME_BUF: usize = 256;
/// Most labels a 255-byte name can have (each takes at least two bytes), plus the root.
const MAX_LABELS: usize = MAX_NAME / 2 + 1;
/// Suffixes of a name that are looked up: the last `SUFFIX_RING` labels' (a ring, so a name
/// with more labels keeps its rightmost ones). A rule has at most this many labels.
pub const SUFFIX_RING: usize = 32;
/// Longest label (RFC 1035 §2.3.4); a length byte above it is a compression pointer or an
/// extended label type, neither of which a query's question holds.
pub const MAX_LABEL: u8 = 63;

/// The hash's base: odd, with its bits spread.
pub const HASH_BASE: u64 = 0x9e37_79b9_7f4a_7c15;

/// Per-CPU working memory of [`scan`] (the BPF stack has 512 bytes in all).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameScratch {
    /// The name as the packet carries it, from its first length byte.
    pub buf: [u8; NAME_BUF],
    /// The hash of the suffix that starts at byte `i`.
    pub suffix: [u64; NAME_BUF],
    /// Where label `k` starts (its length byte), at `k % SUFFIX_RING`.
    pub starts: [u8; SUFFIX_RING],
}

/// A scanned name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Wire length, the terminating zero included.
    pub len: u32,
    /// Labels, the root not counted.
    pub labels: u32,
}

impl Scanned {
    /// The hash of the suffix that starts at label `label` (0 = the whole name), for `label`
    /// among the last [`SUFFIX_RING`] labels.
    #[inline(always)]
    pub fn suffix_hash(&self, s: &NameScratch, label: u32) -> u64 {
        let start = s.starts[label as usize & (SUFFIX_RING - 1)];
        s.suffix[start as usize & (NAME_BUF - 1)]
    }

    /// The first label whose suffix [`Scanned::suffix_hash`] can give.
    #[inline(always)]
    pub fn first_suffix(&self) -> u32 {
        self.labels.saturating_sub(SUFFIX_RING as u32)
    }
}

/// One byte's term: ASCII letters lower-cased (names compare case-insensitively, RFC 4343; a
/// length byte is at most 63, below every letter, so it is never changed), plus one so that a
/// zero byte still counts.
#[inline(always)]
fn term(b: u8) -> u64 {
    let c = if b.is_ascii_uppercase() { b | 0x20 } else { b };
    c as u64 + 1
}

#[inline(always)]
fn step(h: u64, b: u8) -> u64 {
    h.wrapping_mul(HASH_BASE).wrapping_add(term(b))
}

/// Scans the wire-form name at the start of `s.buf`, of which the first `avail` bytes are the
/// packet's, and hashes every suffix. `None` for a name that is not a plain query name: a
/// compression pointer, a label longer than 63, more than 255 bytes, or cut off by `avail`.
#[inline(always)]
pub fn scan(s: &mut NameScratch, avail: u32) -> Option<Scanned> {
    let scanned = find_labels(s, avail)?;
    hash_suffixes(s, scanned.len);
    Some(scanned)
}

/// The first half of [`scan`]: where the labels start, and the name's length. The kernel
/// passes the result through map memory before [`hash_suffixes`], which the verifier cannot
/// follow: each label count would otherwise be verified through the rest of the program on its
/// own.
#[inline(always)]
pub fn find_labels(s: &mut NameScratch, avail: u32) -> Option<Scanned> {
    let mut pos = 0u32;
    // Every pass but the last starts a label, so the pass count is the label count.
    for labels in 0..MAX_LABELS as u32 {
        if pos >= avail || pos >= MAX_NAME as u32 {
            return None;
        }
        // See hash_suffixes: an index LLVM turns into a moving pointer loses the mask.
        let b = s.buf[core::hint::black_box(pos) as usize & (NAME_BUF - 1)];
        if b == 0 {
            return Some(Scanned { len: pos + 1, labels });
        }
        if b > MAX_LABEL {
            return None;
        }
        s.starts[labels as usize & (SUFFIX_RING - 1)] = pos as u8;
        pos += 1 + b as u32;
    }
    None
}

/// The second half of [`scan`]: the hash of the suffix at every byte of a `len`-byte name,
/// from the end.
#[inline(always)]
pub fn hash_suffixes(s: &mut NameScratch, len: u32) {
    let mut hash = 0u64;
    let mut power = 1u64;
    for j in 0..MAX_NAME as u32 {
        if j >= len {
            break;
        }
        // Masked after the black_box: otherwise LLVM turns the index into a pointer walking
        // down from the end, unmasked, which the verifier cannot bound from below.
        let i = core::hint::black_box(len - 1 - j) as usize & (NAME_BUF - 1);
        hash = hash.wrapping_add(term(s.buf[i]).wrapping_mul(power));
        power = power.wrapping_mul(HASH_BASE);
        s.suffix[i] = hash;
    }
}

/// Why a domain cannot be a name rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainError {
    Empty,
    /// An empty label (`a..b`, a leading dot).
    EmptyLabel,
    LabelTooLong,
    NameTooLong,
    TooManyLabels,
}

/// The hash a rule for `domain` (`example.com`, `Example.COM.`) is stored under: the hash of
/// its wire form, which equals [`Scanned::suffix_hash`] of the label where it starts in every
/// name under it.
pub fn domain_hash(domain: &str) -> Result<u64, DomainError> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() {
        return Err(DomainError::Empty);
    }
    let mut h = 0u64;
    let mut wire_len = 1usize;
    let mut labels = 0usize;
    for label in d.split('.') {
        let len = label.len();
        if len == 0 {
            return Err(DomainError::EmptyLabel);
        }
        if len > MAX_LABEL as usize {
            return Err(DomainError::LabelTooLong);
        }
        h = step(h, len as u8);
        for &b in label.as_bytes() {
            h = step(h, b);
        }
        wire_len += 1 + len;
        labels += 1;
    }
    if wire_len > MAX_NAME {
        return Err(DomainError::NameTooLong);
    }
    if labels > SUFFIX_RING {
        return Err(DomainError::TooManyLabels);
    }
    Ok(step(h, 0))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::String, vec::Vec};

    use super::*;

    fn scratch(wire: &[u8]) -> NameScratch {
        let mut s = NameScratch { buf: [0; NAME_BUF], suffix: [0; NAME_BUF], starts: [0; SUFFIX_RING] };
        s.buf[..wire.len()].copy_from_slice(wire);
        s
    }

    fn wire(name: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for l in name.split('.') {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    }

    /// Every suffix of the scanned name hashes as the rule for that suffix does.
    fn check(name: &str) {
        let w = wire(name);
        let mut s = scratch(&w);
        let sc = scan(&mut s, w.len() as u32).expect(name);
        assert_eq!(sc.len as usize, w.len());
        let labels: Vec<&str> = name.split('.').collect();
        assert_eq!(sc.labels as usize, labels.len());
        for k in sc.first_suffix()..sc.labels {
            let suffix = labels[k as usize..].join(".");
            assert_eq!(sc.suffix_hash(&s, k), domain_hash(&suffix).unwrap(), "{name}: {suffix}");
        }
    }

    #[test]
    fn every_suffix_hashes_as_its_rule() {
        check("com");
        check("braze.com");
        check("sdk.iad-01.braze.com");
        check("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.example.org");
        let long: String = (0..60).map(|i| std::format!("l{i}.")).collect::<String>() + "example.com";
        check(&long);
    }

    #[test]
    fn case_does_not_matter_and_lookalikes_differ() {
        assert_eq!(domain_hash("Braze.COM."), domain_hash("braze.com"));
        let w = wire("sdk.EvilBraze.com");
        let mut s = scratch(&w);
        let sc = scan(&mut s, w.len() as u32).unwrap();
        let braze = domain_hash("braze.com").unwrap();
        assert!((0..sc.labels).all(|k| sc.suffix_hash(&s, k) != braze));
        assert_eq!(sc.suffix_hash(&s, 1), domain_hash("evilbraze.com").unwrap());
    }

    #[test]
    fn malformed_names_are_not_scanned() {
        for (bytes, avail) in [
            (&[3, b'c', b'o', b'm', 0][..], 4),        // cut before the root
            (&[0xc0, 12][..], 2),                      // compression pointer
            (&[64, b'a'][..], 2),                      // label too long
            (&[3, b'w', b'w', b'w', 0xc0, 12][..], 6), // pointer after a label
        ] {
            let mut s = scratch(bytes);
            assert_eq!(scan(&mut s, avail), None, "{bytes:?}");
        }
        let mut s = scratch(&[63; NAME_BUF]);
        assert_eq!(scan(&mut s, NAME_BUF as u32), None, "longer than 255 bytes");
    }

    #[test]
    fn bad_domains_say_why() {
        assert_eq!(domain_hash(""), Err(DomainError::Empty));
        assert_eq!(domain_hash("."), Err(DomainError::Empty));
        assert_eq!(domain_hash("a..b"), Err(DomainError::EmptyLabel));
        assert_eq!(domain_hash(&"a".repeat(64)), Err(DomainError::LabelTooLong));
        let many = ["a"; 33].join(".");
        assert_eq!(domain_hash(&many), Err(DomainError::TooManyLabels));
        let long = std::vec!["a".repeat(60); 5].join(".");
        assert_eq!(domain_hash(&long), Err(DomainError::NameTooLong));
    }
}
