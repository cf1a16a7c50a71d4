//! SHA-256 block compression with the x86-64 SHA extensions (SHA-NI), one or two streams at a time.
//!
//! One SHA-256 stream is latency-bound: every `sha256rnds2` waits for the previous one. Two
//! independent streams interleaved keep the SHA unit busy: each 4-round step is issued for lane 0
//! and then for lane 1, and the 16 steps of a block are fully unrolled by macros so that the
//! 2 × (2 state + 4 message) registers stay in xmm registers (a runtime `i % 4` loop spills the
//! message words and runs ~20% slower, see `docs/perf-limits.md`).
//!
//! Invariants:
//! - the only way to call the kernels is through a [`ShaNi`] token, and the only way to get a token
//!   is [`ShaNi::detect`], which checks the CPU features at run time; so the `unsafe`
//!   `#[target_feature]` functions are only ever reached on CPUs that have those features;
//! - block inputs are byte slices whose length is a multiple of 64; the kernels iterate with
//!   `chunks_exact(64)`, so no load can read past the slice.
//!
//! The state is the usual `[u32; 8]` (A..H), the same layout `sha2::compress256` uses, so the
//! caller can mix these kernels with the portable one.

use super::K;
use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
    _mm_shuffle_epi8, _mm_storeu_si128,
};

/// Proof that the running CPU has SHA-NI, SSE2, SSSE3 and SSE4.1.
#[derive(Clone, Copy, Debug)]
pub(super) struct ShaNi(());

impl ShaNi {
    /// A token if the CPU has every feature the kernels are compiled for, else `None`.
    pub(super) fn detect() -> Option<ShaNi> {
        let ok = std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1");
        ok.then_some(ShaNi(()))
    }

    /// Compresses `blocks` (a multiple of 64 bytes; a partial trailing block is ignored) into `state`.
    pub(super) fn x1(self, state: &mut [u32; 8], blocks: &[u8]) {
        debug_assert_eq!(blocks.len() % 64, 0);
        // SAFETY: a `ShaNi` exists only if `detect` found every feature `compress_x1` enables.
        unsafe { compress_x1(state, blocks) }
    }

    /// Compresses `b0` into `s0` and `b1` into `s1`, interleaved. Both inputs must have the same
    /// number of 64-byte blocks; the kernel stops at the shorter one.
    pub(super) fn x2(self, s0: &mut [u32; 8], s1: &mut [u32; 8], b0: &[u8], b1: &[u8]) {
        debug_assert_eq!(b0.len() % 64, 0);
        debug_assert_eq!(b0.len(), b1.len());
        // SAFETY: a `ShaNi` exists only if `detect` found every feature `compress_x2` enables.
        unsafe { compress_x2(s0, s1, b0, b1) }
    }
}

/// `sha256rnds2` twice: rounds 4i..4i+4 with message words `w` (already scheduled).
macro_rules! rounds4 {
    ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
        let wk = _mm_add_epi32($w, _mm_loadu_si128(K.as_ptr().add(4 * $i).cast()));
        $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, wk);
        $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }};
}

/// Message schedule: W[i..i+4] from W[i-16..i-12] (`$w0`), ..., W[i-4..i] (`$w3`).
macro_rules! schedule {
    ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {{
        let t = _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4));
        _mm_sha256msg2_epu32(t, $w3)
    }};
}

/// The 64 rounds of one block for every lane `[abef, cdgh, m0, m1, m2, m3]`, where `m0..m3`
/// hold the block's 16 byte-swapped message words. Each 4-round step is issued for every lane
/// before the next step; `m0..m3` rotate as a ring of the last 16 schedule words.
macro_rules! block_rounds {
    ($([$a:ident, $c:ident, $m0:ident, $m1:ident, $m2:ident, $m3:ident]),+) => {
        $( rounds4!($a, $c, $m0, 0); )+
        $( rounds4!($a, $c, $m1, 1); )+
        $( rounds4!($a, $c, $m2, 2); )+
        $( rounds4!($a, $c, $m3, 3); )+
        block_rounds!(@sched 4; $([$a, $c, $m0, $m1, $m2, $m3]),+);
        block_rounds!(@sched 8; $([$a, $c, $m0, $m1, $m2, $m3]),+);
        block_rounds!(@sched 12; $([$a, $c, $m0, $m1, $m2, $m3]),+);
    };
    (@sched $i:expr; $([$a:ident, $c:ident, $m0:ident, $m1:ident, $m2:ident, $m3:ident]),+) => {
        $( $m0 = schedule!($m0, $m1, $m2, $m3); rounds4!($a, $c, $m0, $i); )+
        $( $m1 = schedule!($m1, $m2, $m3, $m0); rounds4!($a, $c, $m1, $i + 1); )+
        $( $m2 = schedule!($m2, $m3, $m0, $m1); rounds4!($a, $c, $m2, $i + 2); )+
        $( $m3 = schedule!($m3, $m0, $m1, $m2); rounds4!($a, $c, $m3, $i + 3); )+
    };
}

/// Byte-swaps each 32-bit word (SHA-256 words are big-endian).
macro_rules! bswap_mask {
    () => {
        _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203)
    };
}

/// Loads the 16 message words of the 64-byte block at `$p` into four registers.
macro_rules! load_block {
    ($p:expr, $mask:expr) => {{
        let p: *const __m128i = $p.cast();
        (
            _mm_shuffle_epi8(_mm_loadu_si128(p), $mask),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), $mask),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), $mask),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), $mask),
        )
    }};
}

/// `[A..H]` to the (ABEF, CDGH) register pair `sha256rnds2` works on.
///
/// # Safety
/// The CPU must support the enabled features.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
    let dcba = _mm_loadu_si128(s.as_ptr().cast());
    let hgfe = _mm_loadu_si128(s.as_ptr().add(4).cast());
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    (
        _mm_alignr_epi8(cdab, efgh, 8),
        _mm_blend_epi16(efgh, cdab, 0xF0),
    )
}

/// Inverse of [`load_state`].
///
/// # Safety
/// The CPU must support the enabled features.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn store_state(s: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    let hgfe = _mm_alignr_epi8(dchg, feba, 8);
    _mm_storeu_si128(s.as_mut_ptr().cast(), dcba);
    _mm_storeu_si128(s.as_mut_ptr().add(4).cast(), hgfe);
}

/// # Safety
/// The CPU must support the enabled features. Reads only within `blocks` (`chunks_exact`).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn compress_x1(state: &mut [u32; 8], blocks: &[u8]) {
    let mask = bswap_mask!();
    let (mut a, mut c) = load_state(state);
    for block in blocks.chunks_exact(64) {
        let (sa, sc) = (a, c);
        let (mut m0, mut m1, mut m2, mut m3) = load_block!(block.as_ptr(), mask);
        block_rounds!([a, c, m0, m1, m2, m3]);
        a = _mm_add_epi32(a, sa);
        c = _mm_add_epi32(c, sc);
    }
    store_state(state, a, c);
}

/// # Safety
/// The CPU must support the enabled features. Reads only within `b0` and `b1` (`chunks_exact`).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn compress_x2(s0: &mut [u32; 8], s1: &mut [u32; 8], b0: &[u8], b1: &[u8]) {
    let mask = bswap_mask!();
    let (mut a0, mut c0) = load_state(s0);
    let (mut a1, mut c1) = load_state(s1);
    for (x, y) in b0.chunks_exact(64).zip(b1.chunks_exact(64)) {
        let (sa0, sc0, sa1, sc1) = (a0, c0, a1, c1);
        let (mut m00, mut m01, mut m02, mut m03) = load_block!(x.as_ptr(), mask);
        let (mut m10, mut m11, mut m12, mut m13) = load_block!(y.as_ptr(), mask);
        block_rounds!([a0, c0, m00, m01, m02, m03], [a1, c1, m10, m11, m12, m13]);
        a0 = _mm_add_epi32(a0, sa0);
        c0 = _mm_add_epi32(c0, sc0);
        a1 = _mm_add_epi32(a1, sa1);
        c1 = _mm_add_epi32(c1, sc1);
    }
    store_state(s0, a0, c0);
    store_state(s1, a1, c1);
}
