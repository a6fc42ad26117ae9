//! Shared workloads for the criterion benches in `benches/benches/`.
//!
//! Every workload is deterministic (fixed seeds) so that each arm of a bench sees the very
//! same bytes, and every arm's output is checked against the workload before it is timed.

pub mod sse;
pub mod ws;

/// A small deterministic generator (xorshift64*), so workloads need no `rand`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}
