//! The block gate's userspace half: setting the bits an address rule needs before the rule
//! enters the trie (see `tracker_common::gate` for what the bits mean and why they exist).

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use ipnet::IpNet;
use tracker_common::{
    gate::{self, Slot, V6_SHORTEST_ENUMERATED, WORDS_PER_FAMILY},
    names,
};

/// The kernel's `BLOCK_GATE` array.
pub struct Gate {
    map: Array<MapData, u64>,
}

impl Gate {
    pub fn from_map(map: Map) -> Result<Self> {
        Ok(Self { map: Array::try_from(map).with_context(|| format!("map {}", names::BLOCK_GATE))? })
    }

    /// Sets the bits of every network in `nets`: one read and one write per word touched.
    pub fn admit<'a>(&mut self, nets: impl IntoIterator<Item = &'a IpNet>) -> Result<()> {
        let mut words: HashMap<u32, u64> = HashMap::new();
        for net in nets {
            for Slot { word, mask } in slots(net) {
                *words.entry(word).or_default() |= mask;
            }
        }
        for (word, mask) in words {
            let old = self.map.get(&word, 0).with_context(|| format!("reading {} word {word}", names::BLOCK_GATE))?;
            if old & mask != mask {
                self.map.set(word, old | mask, 0).with_context(|| format!("writing {}", names::BLOCK_GATE))?;
            }
        }
        Ok(())
    }
}

/// The gate bits a network needs, as whole-word masks where it covers whole words.
fn slots(net: &IpNet) -> Vec<Slot> {
    match net {
        IpNet::V4(n) => {
            let first = gate::v4_bit(n.network().octets());
            let count = 1u32 << 24u8.saturating_sub(n.prefix_len()).min(24);
            range(false, first, count)
        }
        IpNet::V6(n) if n.prefix_len() >= 32 => {
            let o = n.network().octets();
            vec![Slot::of(true, gate::v6_bit([o[0], o[1], o[2], o[3]]))]
        }
        IpNet::V6(n) if n.prefix_len() >= V6_SHORTEST_ENUMERATED => {
            let o = n.network().octets();
            let base = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            (0..1u32 << (32 - n.prefix_len())).map(|i| Slot::of(true, gate::v6_bit((base + i).to_be_bytes()))).collect()
        }
        IpNet::V6(_) => range(true, 0, WORDS_PER_FAMILY * 64),
    }
}

/// The slots of `count` consecutive bits from `first`.
fn range(v6: bool, first: u32, count: u32) -> Vec<Slot> {
    let end = first + count;
    let mut out = Vec::new();
    let mut bit = first;
    while bit < end {
        let in_word = (64 - (bit & 63)).min(end - bit);
        let mask = if in_word == 64 { u64::MAX } else { ((1u64 << in_word) - 1) << (bit & 63) };
        out.push(Slot { mask, ..Slot::of(v6, bit) });
        bit += in_word;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(net: &str) -> u64 {
        slots(&net.parse().unwrap()).iter().map(|s| u64::from(s.mask.count_ones())).sum()
    }

    #[test]
    fn a_rule_sets_every_bit_it_covers_and_no_other() {
        assert_eq!(bits("203.0.113.7/32"), 1);
        assert_eq!(bits("203.0.113.0/24"), 1);
        assert_eq!(bits("198.51.0.0/16"), 256);
        assert_eq!(bits("0.0.0.0/0"), 1 << 24);
        assert_eq!(slots(&"0.0.0.0/0".parse().unwrap()).len(), WORDS_PER_FAMILY as usize);
        assert_eq!(slots(&"198.51.0.0/16".parse().unwrap()), range(false, gate::v4_bit([198, 51, 0, 0]), 256));
        assert_eq!(bits("2001:db8::1/128"), 1);
        assert!(bits("2001:db8::/30") <= 4);
        assert_eq!(bits("2000::/8"), 1 << 24);
        // A /22 starting mid-word: four bits, in the word of its first /24.
        let s = slots(&"203.0.116.0/22".parse().unwrap());
        let first = gate::v4_bit([203, 0, 116, 0]);
        assert_eq!(s, vec![Slot { mask: 0b1111 << (first & 63), ..Slot::of(false, first) }]);
    }
}
