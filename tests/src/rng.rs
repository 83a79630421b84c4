//! The benchmarks' deterministic generator: xorshift64 seeded per (stream, index) with
//! splitmix64, so any item is generated alone, in any order, and always the same.

/// One item's generator.
pub struct Rng(u64);

impl Rng {
    /// The generator of item `index` of `stream`, under a benchmark's `seed`.
    pub fn new(seed: u64, stream: u64, index: u64) -> Self {
        let mut z = seed ^ stream.wrapping_mul(0xa076_1d64_78bd_642f) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Log-uniform in [lo, hi]: most values small, a long tail of large ones.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> u64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp() as u64
    }

    /// An index drawn by a cumulative weight table (a Zipf-like popularity).
    pub fn zipf(&mut self, cdf: &[f64]) -> usize {
        let u = self.unit() * cdf[cdf.len() - 1];
        cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
    }
}

/// The cumulative weights of a Zipf popularity over `n` items with exponent `s`, for
/// [`Rng::zipf`].
pub fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    (0..n)
        .map(|k| {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            acc
        })
        .collect()
}
