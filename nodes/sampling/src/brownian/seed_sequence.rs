//! numpy's `SeedSequence` (`numpy/random/bit_generator.pyx`: `SeedSequence`,
//! `hashmix`, `mix`, `_coerce_to_uint32_array`, `generate_state`), which
//! torchsde's Brownian interval uses to give every node of its tree its own
//! seeds. Only what torchsde calls: an integer entropy, an integer spawn key,
//! a pool size, `generate_state(n)` as uint32 words. All arithmetic is
//! numpy's uint32 arithmetic: wrapping, modulo 2^32.

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// `_int_to_uint32_array`: a non-negative integer as little-endian 32-bit
/// words (0 is one word).
fn words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n != 0 {
        out.push(n as u32);
        n >>= 32;
    }
    out
}

/// `hashmix`: mixes `value` with the running hash constant.
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

/// `mix`: combines two words.
fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// A seed sequence's mixed entropy pool.
pub struct SeedSequence {
    pool: Vec<u32>,
}

impl SeedSequence {
    /// `SeedSequence(entropy=entropy, spawn_key=spawn_key,
    /// pool_size=pool_size)`: the entropy's words (padded with zeros to the
    /// pool size when there is a spawn key), then the spawn key's words,
    /// mixed into the pool (`mix_entropy`).
    pub fn new(entropy: u128, spawn_key: &[u128], pool_size: usize) -> SeedSequence {
        let mut assembled = words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&k| words(k)).collect();
        if !spawn.is_empty() && assembled.len() < pool_size {
            assembled.resize(pool_size, 0);
        }
        assembled.extend(spawn);
        let mut hash_const = INIT_A;
        let mut pool: Vec<u32> = (0..pool_size)
            .map(|i| hashmix(assembled.get(i).copied().unwrap_or(0), &mut hash_const))
            .collect();
        for src in 0..pool_size {
            for dst in 0..pool_size {
                if src != dst {
                    let h = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        for &word in assembled.iter().skip(pool_size) {
            for slot in pool.iter_mut() {
                let h = hashmix(word, &mut hash_const);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n_words)` (dtype uint32): the pool cycled and hashed.
    pub fn generate_state(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut v = self.pool[i % self.pool.len()] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by numpy 2.4.6:
    /// `np.random.SeedSequence(entropy=E, spawn_key=K, pool_size=P).generate_state(4)`.
    #[test]
    fn matches_numpy() {
        let cases: &[(u128, &[u128], usize, [u32; 4])] = &[
            (0, &[], 4, [0xb0f478be, 0xdb2cd7e7, 0x2c71ba49, 0xabf4641a]),
            (0, &[], 24, [0xeff41bd6, 0xa030bacb, 0x8ab2f371, 0x5df8813d]),
            (
                7,
                &[0, 0],
                24,
                [0x0f99a34e, 0xf15ed8fc, 0x2a82ed6f, 0x8c683fbd],
            ),
            (
                123456789,
                &[5, 3],
                24,
                [0x5c687ce0, 0x8c70e0e1, 0xe8400980, 0x37d49b50],
            ),
            (
                u64::MAX as u128,
                &[(1 << 33) + 1, 33],
                24,
                [0xe217cee6, 0xcceac787, 0x46529d31, 0x461e72e3],
            ),
            (
                (1 << 40) + 3,
                &[12345, 20],
                24,
                [0x9e3ee122, 0x077edaee, 0x54ba7ad1, 0xaf5ea3a2],
            ),
        ];
        for (entropy, key, pool, want) in cases {
            let got = SeedSequence::new(*entropy, key, *pool).generate_state(4);
            assert_eq!(
                got,
                want.to_vec(),
                "entropy {entropy} key {key:?} pool {pool}"
            );
        }
    }
}
