//! A small deterministic PRNG (SplitMix64, Steele/Lea/Flood 2014) so that every simulated
//! run is a pure function of its seed.

/// SplitMix64: one 64-bit state word, full period, good enough statistics for choosing
/// which frames to drop. Not cryptographic, and it does not need to be.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

/// Probabilities are given in parts per million so they stay integers (and print exactly).
pub(crate) const PPM: u32 = 1_000_000;

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// A value uniformly distributed in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `ppm` / 1,000,000.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(u64::from(PPM)) < u64::from(ppm)
    }

    /// A generator for a sub-purpose, independent of how many numbers this one has drawn
    /// afterwards: the two link directions get their own so that changing what one
    /// direction draws does not perturb the other.
    pub(crate) fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// The SplitMix64 output function; also used as a hash for the byte patterns.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = (0..8).scan(Rng::new(42), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(Rng::new(42), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(Rng::new(43), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn chance_matches_its_probability_roughly() {
        let mut rng = Rng::new(1);
        let hits = (0..100_000).filter(|_| rng.chance(100_000)).count();
        assert!((9_000..11_000).contains(&hits), "10% chance hit {hits} of 100000");
        assert!(!(0..1000).any(|_| rng.chance(0)));
        assert!((0..1000).all(|_| rng.chance(PPM)));
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
