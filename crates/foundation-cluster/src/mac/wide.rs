//! POLYVAL with carry-less multiply, several blocks per reduction: with
//! AVX-512 and VPCLMULQDQ, 32 blocks (512 bytes) a round, four blocks per
//! multiply; with AVX2 and VPCLMULQDQ (AMD Zen 3 on, Intel Ice Lake on,
//! and virtual machines that hide AVX-512), 16 blocks a round, two per
//! multiply; with PCLMULQDQ alone (every x86-64 of the last decade), 8
//! blocks (128 bytes) a round, one block per multiply. The `polyval`
//! crate reduces after every block, and each block waits for the one
//! before: on this project's 2-core machine (no AVX-512), it was 15 % of
//! the CPU of a snapshot transfer.
//!
//! POLYVAL's product is `a ⊙ b = a·b·x⁻¹²⁸` in GF(2¹²⁸) modulo
//! `x¹²⁸ + x¹²⁷ + x¹²⁶ + x¹²¹ + 1`, and the hash of blocks `X₁..Xₙ` is
//! `Σ Xⱼ ⊙ Hⁿ⁻ʲ⁺¹` (powers under `⊙`). So a round multiplies its blocks
//! by `Hᵐ..H¹` without reducing, adds the 256-bit products, and reduces
//! once; the running value is added to the round's first block.
//!
//! Every operation is constant-time (no branch or address depends on the
//! key or the data). The portable engine checks both in `mac.rs`.

use std::arch::x86_64::*;

/// Blocks per round (AVX-512).
const ROUND_BLOCKS: usize = 32;
/// Blocks per 512-bit register.
const LANES: usize = 4;
const VECTORS: usize = ROUND_BLOCKS / LANES;
/// Blocks per round (AVX2 with VPCLMULQDQ).
const YMM_BLOCKS: usize = 16;
/// Blocks per 256-bit register.
const YMM_LANES: usize = 2;
const YMM_VECTORS: usize = YMM_BLOCKS / YMM_LANES;
/// Blocks per round (PCLMULQDQ alone).
const NARROW_BLOCKS: usize = 8;

/// `H` and its powers, laid out for a round of the engine this CPU runs.
pub(super) struct Keys {
    h: __m128i,
    engine: Engine,
}

// `Keys` is boxed, once per connection and direction: the Wide variant's
// 512 bytes are not moved around.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// Vector `v` holds `[H^(32-4v), H^(31-4v), H^(30-4v), H^(29-4v)]`
    /// (lane 0 lowest), so the last `m` vectors hold `H^(4m)..H^1` for a
    /// shorter round.
    Wide([__m512i; VECTORS]),
    /// Vector `v` holds `[H^(16-2v), H^(15-2v)]` (lane 0 lowest), so the
    /// last `m` vectors hold `H^(2m)..H^1`; beside it, each lane's two
    /// halves added (Karatsuba's middle factor, in the low half).
    Ymm([__m256i; YMM_VECTORS], [__m256i; YMM_VECTORS]),
    /// `H^8..H^1`: the last `m` hold `H^m..H^1`.
    Narrow([__m128i; NARROW_BLOCKS]),
}

fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("vpclmulqdq")
        && is_x86_feature_detected!("pclmulqdq")
}

fn ymm_supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("vpclmulqdq") && is_x86_feature_detected!("pclmulqdq")
}

impl Keys {
    /// The widest engine this CPU runs; `None` when it lacks PCLMULQDQ.
    pub(super) fn new(h: &[u8; 16]) -> Option<Keys> {
        // SAFETY: the features these functions enable were just detected.
        if supported() { Some(unsafe { expand(h) }) } else { Keys::ymm(h).or_else(|| Keys::narrow(h)) }
    }

    /// The AVX2 and VPCLMULQDQ engine, where the CPU has them (also where
    /// AVX-512 is there: the tests compare it with the others).
    pub(super) fn ymm(h: &[u8; 16]) -> Option<Keys> {
        // SAFETY: the features this function enables were just detected.
        ymm_supported().then(|| unsafe { expand_ymm(h) })
    }

    /// The PCLMULQDQ engine (also where AVX-512 is there: the tests
    /// compare it with the others).
    pub(super) fn narrow(h: &[u8; 16]) -> Option<Keys> {
        // SAFETY: as above.
        is_x86_feature_detected!("pclmulqdq").then(|| unsafe { expand_narrow(h) })
    }

    /// Which engine: `"avx512"`, `"avx2"` or `"pclmulqdq"`.
    pub(super) fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Wide(_) => "avx512",
            Engine::Ymm(..) => "avx2",
            Engine::Narrow(_) => "pclmulqdq",
        }
    }

    /// Hashes whole blocks (`data.len()` a multiple of 16) onto `acc`.
    pub(super) fn blocks(&self, acc: u128, data: &[u8]) -> u128 {
        debug_assert_eq!(data.len() % 16, 0);
        // SAFETY: each engine exists only where its features were
        // detected; every load below stays inside `data`.
        unsafe {
            from_m128(match &self.engine {
                Engine::Wide(powers) => blocks(self.h, powers, to_m128(acc), data),
                Engine::Ymm(powers, sums) => ymm_blocks(self.h, powers, sums, to_m128(acc), data),
                Engine::Narrow(powers) => narrow_blocks(powers, to_m128(acc), data),
            })
        }
    }
}

#[inline]
fn to_m128(x: u128) -> __m128i {
    // SAFETY: sse2 is part of x86-64; the types have the same size.
    unsafe { _mm_loadu_si128(x.to_le_bytes().as_ptr().cast()) }
}

#[inline]
fn from_m128(x: __m128i) -> u128 {
    let mut out = [0u8; 16];
    // SAFETY: sse2 is part of x86-64; `out` is 16 bytes.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), x) };
    u128::from_le_bytes(out)
}

/// `lo + hi·x¹²⁸` times `x⁻¹²⁸`, reduced: two folds of 64 bits, each adding
/// the folded word times the modulus (whose low word is 1, and whose
/// `x⁶⁴..x¹²⁷` part is `0xc2 << 56`).
#[target_feature(enable = "pclmulqdq")]
fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    let poly = _mm_set_epi64x(0xc200_0000_0000_0000_u64 as i64, 1);
    let t = _mm_clmulepi64_si128(lo, poly, 0x10);
    let lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
    let t = _mm_clmulepi64_si128(lo, poly, 0x10);
    let lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
    _mm_xor_si128(lo, hi)
}

/// `a ⊙ b`.
#[target_feature(enable = "pclmulqdq")]
fn mul(a: __m128i, b: __m128i) -> __m128i {
    let lo = _mm_clmulepi64_si128(a, b, 0x00);
    let hi = _mm_clmulepi64_si128(a, b, 0x11);
    let mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10));
    reduce(_mm_xor_si128(lo, _mm_slli_si128(mid, 8)), _mm_xor_si128(hi, _mm_srli_si128(mid, 8)))
}

/// `H^k` at index `k`, for `k` in `1..N` (index 0 holds `H` too).
#[target_feature(enable = "pclmulqdq")]
fn powers_of<const N: usize>(h: __m128i) -> [__m128i; N] {
    let mut pow = [h; N];
    for k in 2..N {
        pow[k] = mul(pow[k - 1], h);
    }
    pow
}

#[target_feature(enable = "pclmulqdq,avx512f")]
unsafe fn expand(h: &[u8; 16]) -> Keys {
    // SAFETY (loads): `h` is 16 bytes, `lanes` 64.
    let h = unsafe { _mm_loadu_si128(h.as_ptr().cast()) };
    let pow = powers_of::<{ ROUND_BLOCKS + 1 }>(h);
    let mut powers = [_mm512_setzero_si512(); VECTORS];
    for (v, p) in powers.iter_mut().enumerate() {
        let top = ROUND_BLOCKS - LANES * v;
        let lanes = [pow[top], pow[top - 1], pow[top - 2], pow[top - 3]];
        *p = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    }
    Keys { h, engine: Engine::Wide(powers) }
}

#[target_feature(enable = "pclmulqdq")]
unsafe fn expand_narrow(h: &[u8; 16]) -> Keys {
    // SAFETY: `h` is 16 bytes.
    let h = unsafe { _mm_loadu_si128(h.as_ptr().cast()) };
    let mut powers = [h; NARROW_BLOCKS];
    // powers[i] = H^(8-i): the last is H¹.
    for i in (0..NARROW_BLOCKS - 1).rev() {
        powers[i] = mul(powers[i + 1], h);
    }
    Keys { h, engine: Engine::Narrow(powers) }
}

#[target_feature(enable = "pclmulqdq,avx2")]
unsafe fn expand_ymm(h: &[u8; 16]) -> Keys {
    // SAFETY (loads): `h` is 16 bytes, `lanes` 32.
    let h = unsafe { _mm_loadu_si128(h.as_ptr().cast()) };
    let pow = powers_of::<{ YMM_BLOCKS + 1 }>(h);
    let mut powers = [_mm256_setzero_si256(); YMM_VECTORS];
    let mut sums = powers;
    for (v, (p, sum)) in powers.iter_mut().zip(&mut sums).enumerate() {
        let top = YMM_BLOCKS - YMM_LANES * v;
        let lanes = [pow[top], pow[top - 1]];
        *p = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
        *sum = _mm256_xor_si256(*p, _mm256_shuffle_epi32(*p, 0x4e));
    }
    Keys { h, engine: Engine::Ymm(powers, sums) }
}

/// One round over `n` blocks at `p` (at most [`NARROW_BLOCKS`]): the
/// blocks times `H^n..H^1`, plus `acc` times the first power, reduced.
///
/// # Safety
/// `p` points at `16 · n` readable bytes; the CPU has PCLMULQDQ.
#[target_feature(enable = "pclmulqdq")]
unsafe fn narrow_round(powers: &[__m128i; NARROW_BLOCKS], acc: __m128i, p: *const u8, n: usize) -> __m128i {
    let first = NARROW_BLOCKS - n;
    let mut lo = _mm_setzero_si128();
    let mut hi = _mm_setzero_si128();
    let mut mid = _mm_setzero_si128();
    for j in 0..n {
        // SAFETY: `j < n`, so the 16 bytes are inside the caller's range.
        let mut x = unsafe { _mm_loadu_si128(p.add(16 * j).cast()) };
        if j == 0 {
            x = _mm_xor_si128(x, acc);
        }
        let h = powers[first + j];
        lo = _mm_xor_si128(lo, _mm_clmulepi64_si128(x, h, 0x00));
        hi = _mm_xor_si128(hi, _mm_clmulepi64_si128(x, h, 0x11));
        mid = _mm_xor_si128(mid, _mm_xor_si128(_mm_clmulepi64_si128(x, h, 0x01), _mm_clmulepi64_si128(x, h, 0x10)));
    }
    reduce(_mm_xor_si128(lo, _mm_slli_si128(mid, 8)), _mm_xor_si128(hi, _mm_srli_si128(mid, 8)))
}

#[target_feature(enable = "pclmulqdq")]
unsafe fn narrow_blocks(powers: &[__m128i; NARROW_BLOCKS], mut acc: __m128i, data: &[u8]) -> __m128i {
    let mut rounds = data.chunks_exact(NARROW_BLOCKS * 16);
    for r in &mut rounds {
        // SAFETY: `r` is a whole round's bytes.
        acc = unsafe { narrow_round(powers, acc, r.as_ptr(), NARROW_BLOCKS) };
    }
    let rest = rounds.remainder();
    if !rest.is_empty() {
        // SAFETY: `rest` holds `rest.len() / 16` whole blocks.
        acc = unsafe { narrow_round(powers, acc, rest.as_ptr(), rest.len() / 16) };
    }
    acc
}

/// One round over `vectors` 32-byte vectors at `p` (at most
/// `YMM_VECTORS`), with the last `vectors` of the key table: as [`round`],
/// two blocks per multiply, and three multiplies per pair of blocks
/// (Karatsuba: the middle product is `(x₀+x₁)(h₀+h₁)` less the outer two,
/// subtracted once for the round).
///
/// # Safety
/// `p` points at `32 · vectors` readable bytes; the CPU has the features.
#[target_feature(enable = "pclmulqdq,avx2,vpclmulqdq")]
unsafe fn ymm_round(powers: &[__m256i; YMM_VECTORS], sums: &[__m256i; YMM_VECTORS], acc: __m128i, p: *const u8, vectors: usize) -> __m128i {
    let first = YMM_VECTORS - vectors;
    let mut lo = _mm256_setzero_si256();
    let mut hi = _mm256_setzero_si256();
    let mut mid = _mm256_setzero_si256();
    for v in 0..vectors {
        // SAFETY: `v < vectors`, so the 32 bytes are inside the caller's range.
        let mut x = unsafe { _mm256_loadu_si256(p.add(32 * v).cast()) };
        if v == 0 {
            x = _mm256_xor_si256(x, _mm256_zextsi128_si256(acc));
        }
        let h = powers[first + v];
        lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128(x, h, 0x00));
        hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128(x, h, 0x11));
        let x_sum = _mm256_xor_si256(x, _mm256_shuffle_epi32(x, 0x4e));
        mid = _mm256_xor_si256(mid, _mm256_clmulepi64_epi128(x_sum, sums[first + v], 0x00));
    }
    let mid = _mm256_xor_si256(mid, _mm256_xor_si256(lo, hi));
    let fold = |v: __m256i| _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let lo = fold(_mm256_xor_si256(lo, _mm256_bslli_epi128(mid, 8)));
    let hi = fold(_mm256_xor_si256(hi, _mm256_bsrli_epi128(mid, 8)));
    reduce(lo, hi)
}

#[target_feature(enable = "pclmulqdq,avx2,vpclmulqdq")]
unsafe fn ymm_blocks(h: __m128i, powers: &[__m256i; YMM_VECTORS], sums: &[__m256i; YMM_VECTORS], mut acc: __m128i, data: &[u8]) -> __m128i {
    let mut rounds = data.chunks_exact(YMM_BLOCKS * 16);
    for r in &mut rounds {
        // SAFETY: `r` is a whole round's bytes.
        acc = unsafe { ymm_round(powers, sums, acc, r.as_ptr(), YMM_VECTORS) };
    }
    let rest = rounds.remainder();
    let vectors = rest.len() / 32;
    if vectors > 0 {
        // SAFETY: `rest` holds `vectors` whole vectors.
        acc = unsafe { ymm_round(powers, sums, acc, rest.as_ptr(), vectors) };
    }
    if let Some(b) = rest[vectors * 32..].chunks_exact(16).next() {
        // SAFETY: `b` is 16 bytes.
        let x = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
        acc = mul(_mm_xor_si128(acc, x), h);
    }
    acc
}

/// The four 128-bit lanes of `v` added together.
#[target_feature(enable = "avx512f")]
fn fold(v: __m512i) -> __m128i {
    let a = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    _mm_xor_si128(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1))
}

/// One round over `vectors` 64-byte vectors at `p` (at most `VECTORS`),
/// with the last `vectors` of the key table: the round's blocks times
/// `H^(4·vectors)..H^1`, plus `acc` times the first power, reduced.
///
/// # Safety
/// `p` points at `64 · vectors` readable bytes; the CPU has the features.
#[target_feature(enable = "pclmulqdq,avx512f,avx512bw,vpclmulqdq")]
unsafe fn round(powers: &[__m512i; VECTORS], acc: __m128i, p: *const u8, vectors: usize) -> __m128i {
    let first = VECTORS - vectors;
    let mut lo = _mm512_setzero_si512();
    let mut hi = _mm512_setzero_si512();
    let mut mid = _mm512_setzero_si512();
    for v in 0..vectors {
        // SAFETY: `v < vectors`, so the 64 bytes are inside the caller's range.
        let mut x = unsafe { _mm512_loadu_si512(p.add(64 * v).cast()) };
        if v == 0 {
            x = _mm512_xor_si512(x, _mm512_zextsi128_si512(acc));
        }
        let h = powers[first + v];
        lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(x, h, 0x00));
        hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(x, h, 0x11));
        // 0x96: a ^ b ^ c.
        mid = _mm512_ternarylogic_epi64(mid, _mm512_clmulepi64_epi128(x, h, 0x01), _mm512_clmulepi64_epi128(x, h, 0x10), 0x96);
    }
    let lo = fold(_mm512_xor_si512(lo, _mm512_bslli_epi128(mid, 8)));
    let hi = fold(_mm512_xor_si512(hi, _mm512_bsrli_epi128(mid, 8)));
    reduce(lo, hi)
}

#[target_feature(enable = "pclmulqdq,avx512f,avx512bw,vpclmulqdq")]
unsafe fn blocks(h: __m128i, powers: &[__m512i; VECTORS], mut acc: __m128i, data: &[u8]) -> __m128i {
    let mut rounds = data.chunks_exact(ROUND_BLOCKS * 16);
    for r in &mut rounds {
        // SAFETY: `r` is a whole round's bytes.
        acc = unsafe { round(powers, acc, r.as_ptr(), VECTORS) };
    }
    let rest = rounds.remainder();
    let vectors = rest.len() / 64;
    if vectors > 0 {
        // SAFETY: `rest` holds `vectors` whole vectors.
        acc = unsafe { round(powers, acc, rest.as_ptr(), vectors) };
    }
    for b in rest[vectors * 64..].chunks_exact(16) {
        // SAFETY: `b` is 16 bytes.
        let x = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
        acc = mul(_mm_xor_si128(acc, x), h);
    }
    acc
}
