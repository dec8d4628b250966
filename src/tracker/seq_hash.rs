//! The hash of the in-flight map's keys: request sequence numbers, which tokentap hands out
//! itself. No client chooses them, so SipHash's defence against chosen collisions buys nothing,
//! and it cost more than the map operation it served (callgrind: about 200 instructions for
//! each of the two per request).

use std::hash::{BuildHasherDefault, Hasher};

pub type SeqHash = BuildHasherDefault<SeqHasher>;

/// Fibonacci hashing: one multiplication spreads consecutive numbers over the high bits (the
/// map's shard and control bytes) and, the factor being odd, over the low bits (its buckets).
#[derive(Default)]
pub struct SeqHasher(u64);

const FACTOR: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FACTOR);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FACTOR);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn consecutive_numbers_spread_over_high_and_low_bits() {
        let hashes: Vec<u64> = (1..=1024u64)
            .map(|n| SeqHash::default().hash_one(n))
            .collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let low: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        // 128 possible top-7-bit values, 1024 possible low-10-bit ones.
        assert_eq!(top.len(), 128);
        assert_eq!(low.len(), 1024);
    }
}
