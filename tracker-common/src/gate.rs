//! The block gate: a bitmap in front of the LPM tries that says which addresses might have an
//! address rule, so that a packet to an address no rule covers (nearly every packet) skips the
//! trie walk. With 100,000 prefixes loaded the walk cost about 100 ns per packet
//! (`cargo xtask bench rules`), more than everything else the program does for a packet of a
//! known flow; an array lookup and a bit test cost a few.
//!
//! One bit per IPv4 /24, and for IPv6 one bit per hash of the /32. A set bit means "look in the
//! trie"; a clear bit must mean "no rule covers this address", so userspace sets a rule's bits
//! before the rule goes into the trie and never clears a bit a rule still needs. Bits of removed
//! rules stay set (a trie lookup too many, never a miss) until the daemon rebuilds the gate.

/// `u64` words per family: 2^24 bits.
pub const WORDS_PER_FAMILY: u32 = 1 << 18;
/// Words of the whole gate: IPv4's, then IPv6's.
pub const WORDS: u32 = 2 * WORDS_PER_FAMILY;
/// IPv6 rules shorter than this cover too many /32s to set one by one; they set every IPv6 bit.
pub const V6_SHORTEST_ENUMERATED: u8 = 16;

/// A bit of the gate: the word's index and the bit within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub word: u32,
    pub mask: u64,
}

impl Slot {
    /// The slot of bit `bit` (0..2^24) of a family's half.
    #[inline(always)]
    pub const fn of(v6: bool, bit: u32) -> Slot {
        let base = if v6 { WORDS_PER_FAMILY } else { 0 };
        Slot { word: base + (bit >> 6), mask: 1 << (bit & 63) }
    }
}

/// The bit of an IPv4 address: its /24.
#[inline(always)]
pub const fn v4_bit(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr) >> 8
}

/// The bit of an IPv6 address: a hash of its /32 (a multiplicative hash; its top 24 bits).
#[inline(always)]
pub const fn v6_bit(first32: [u8; 4]) -> u32 {
    u32::from_be_bytes(first32).wrapping_mul(0x9e37_79b1) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_the_families_and_cover_every_bit() {
        assert_eq!(Slot::of(false, 0), Slot { word: 0, mask: 1 });
        assert_eq!(Slot::of(false, (1 << 24) - 1), Slot { word: WORDS_PER_FAMILY - 1, mask: 1 << 63 });
        assert_eq!(Slot::of(true, 0).word, WORDS_PER_FAMILY);
        assert_eq!(Slot::of(true, (1 << 24) - 1).word, WORDS - 1);
        assert_eq!(v4_bit([203, 0, 113, 7]), v4_bit([203, 0, 113, 200]));
        assert_ne!(v4_bit([203, 0, 113, 7]), v4_bit([203, 0, 112, 7]));
        assert!(v6_bit([0x20, 0x01, 0x0d, 0xb8]) < 1 << 24);
    }
}
