//! Key choosers for the benchmark: uniform, zipfian (scrambled, as YCSB does)
//! and latest (zipfian over recency), plus the YCSB key naming.
//!
//! The zipfian generator follows Gray et al., "Quickly Generating Billion-Record
//! Synthetic Databases" (SIGMOD 1994), which YCSB uses: constant time per draw
//! after an O(n) setup of zeta(n, theta). Scrambling hashes the rank so that the
//! popular keys are spread over the key space instead of clustered at its start.

use rand::Rng;

/// FNV-1a 64 over the 8 bytes of `v`, YCSB's scrambling hash.
pub fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The key of record `ordinal`, YCSB style ("user" + hashed ordinal), padded so
/// that every key has the same length.
/// A second key for a two-key transaction on `key`: on the same shard as `key`
/// (`same`) or on another one, of `shards` (the server's routing is public:
/// docs/protocol.md). With one shard, "another" is the same one.
pub fn companion_key(key: &[u8], shards: u16, same: bool, out: &mut Vec<u8>) {
    use crate::core::hash::shard_for_key;
    let home = shard_for_key(key, shards);
    for i in 0u32.. {
        out.clear();
        out.extend_from_slice(key);
        out.extend_from_slice(format!("/t{i}").as_bytes());
        if shards < 2 || (shard_for_key(out, shards) == home) == same {
            return;
        }
    }
}

pub fn key_for(ordinal: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "user{:020}", fnv64(ordinal));
}

#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!(
            items >= 1 && theta > 0.0 && theta < 1.0,
            "zipfian needs items >= 1 and 0 < theta < 1"
        );
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2.min(items), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A rank in `0..items`; rank 0 is the most popular.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let r = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.items - 1)
    }
}

/// How the benchmark picks the record a read or update touches.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform {
        items: u64,
    },
    /// Zipfian ranks, scrambled over the key space.
    Zipfian(Zipfian),
    /// Zipfian over recency: the newest records are the most popular.
    Latest(Zipfian),
}

impl KeyChooser {
    /// An ordinal in `0..inserted`.
    pub fn next(&self, rng: &mut impl Rng, inserted: u64) -> u64 {
        match self {
            KeyChooser::Uniform { .. } => rng.gen_range(0..inserted.max(1)),
            KeyChooser::Zipfian(z) => fnv64(z.next(rng)) % inserted.max(1),
            KeyChooser::Latest(z) => {
                let back = z.next(rng) % inserted.max(1);
                inserted.max(1) - 1 - back
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipfian_matches_its_distribution_by_rank() {
        let n = 1000u64;
        let theta = 0.99;
        let z = Zipfian::new(n, theta);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[z.next(&mut rng) as usize] += 1;
        }
        let zn = zeta(n, theta);
        for rank in [0usize, 1, 2, 4, 9, 49, 99] {
            let expected = draws as f64 / ((rank + 1) as f64).powf(theta) / zn;
            let got = counts[rank] as f64;
            let tolerance = 0.15 * expected + 3.0 * expected.sqrt();
            assert!(
                (got - expected).abs() < tolerance,
                "rank {rank}: got {got}, expected {expected:.0}"
            );
        }
    }

    #[test]
    fn latest_favours_the_newest() {
        let c = KeyChooser::Latest(Zipfian::new(10_000, 0.99));
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let inserted = 10_000;
        let newest = (0..100_000)
            .filter(|_| c.next(&mut rng, inserted) >= inserted - 10)
            .count();
        // The 10 newest of 10,000 records get far more than 0.1% of accesses.
        assert!(newest > 20_000, "{newest}");
    }

    #[test]
    fn keys_have_fixed_length() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        key_for(0, &mut a);
        key_for(u64::MAX, &mut b);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }
}
