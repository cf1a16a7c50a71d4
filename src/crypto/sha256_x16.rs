//! SHA-256 block compression with AVX-512: sixteen independent streams, one per 32-bit lane.
//!
//! Each of the eight working variables A..H is one 512-bit register holding that variable for
//! all sixteen streams, and every round is the textbook round done with vector instructions
//! (`vprord` rotations, `vpternlogd` for Ch, Maj and three-way XOR). A step reads one 64-byte
//! block from each stream, transposes the 16 × 16 words so that register `j` holds word `j` of
//! every block, and runs the 64 rounds, fully unrolled so that the 16 schedule words stay in
//! registers.
//!
//! Invariants:
//! - the only way to call the kernel is through an [`Avx512`] token, and the only way to get a
//!   token is [`Avx512::detect`], which checks the CPU features at run time; so the `unsafe`
//!   `#[target_feature]` functions are only ever reached on CPUs that have those features;
//! - every stream's input is a byte slice of the same whole number of 64-byte blocks (checked
//!   before the kernel runs); lanes beyond the caller's streams read a static zero block and
//!   their result is dropped, so no load reads outside a slice or that block.
//!
//! The state is the usual `[u32; 8]` (A..H), the layout `sha2::compress256` and the SHA-NI
//! kernels use, so the caller can mix the kernels.
//!
//! Toolchain: the AVX-512 intrinsics are stable since Rust 1.89, hence the crate's
//! `rust-version`.

use super::K;
use core::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_loadu_si512, _mm512_ror_epi32, _mm512_set1_epi32,
    _mm512_set_epi64, _mm512_shuffle_epi8, _mm512_shuffle_i32x4, _mm512_srli_epi32,
    _mm512_storeu_si512, _mm512_ternarylogic_epi32, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
    _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
};

/// Streams compressed side by side.
pub(super) const LANES: usize = 16;

/// The block idle lanes read.
static ZERO_BLOCK: [u8; 64] = [0; 64];

/// Proof that the running CPU has AVX-512F and AVX-512BW.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

impl Avx512 {
    /// A token if the CPU has every feature the kernel is compiled for, else `None`.
    pub(super) fn detect() -> Option<Avx512> {
        let ok =
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
        ok.then_some(Avx512(()))
    }

    /// Compresses `blocks[i]` into `states[i]` for every `i`, all streams side by side.
    ///
    /// # Panics
    /// If there are more than [`LANES`] streams, if the two slices differ in length, or if the
    /// inputs are not all the same whole number of 64-byte blocks (caller bugs).
    pub(super) fn x16(self, states: &mut [[u32; 8]], blocks: &[&[u8]]) {
        assert!(states.len() <= LANES, "at most {LANES} streams");
        assert_eq!(states.len(), blocks.len(), "one input per stream");
        let len = blocks.first().map_or(0, |b| b.len());
        assert!(
            len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len),
            "inputs of the same whole number of blocks"
        );
        // SAFETY: an `Avx512` exists only if `detect` found every feature `compress_x16`
        // enables; the inputs were checked above to be `len / 64` whole blocks each.
        unsafe { compress_x16(states, blocks, len / 64) }
    }
}

/// Byte-swaps each 32-bit word (SHA-256 words are big-endian).
macro_rules! bswap_mask {
    () => {
        _mm512_set_epi64(
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
        )
    };
}

/// `x ^ y ^ z`.
macro_rules! xor3 {
    ($x:expr, $y:expr, $z:expr) => {
        _mm512_ternarylogic_epi32::<0x96>($x, $y, $z)
    };
}

/// One round on `$s` (A..H at indices `$a..$h`): `D += T1`, `H = T1 + T2` with message word `$w`.
macro_rules! round {
    ($s:ident, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr, $g:expr, $h:expr, $w:expr, $i:expr) => {{
        let e = $s[$e];
        let s1 = xor3!(
            _mm512_ror_epi32::<6>(e),
            _mm512_ror_epi32::<11>(e),
            _mm512_ror_epi32::<25>(e)
        );
        // Ch(e, f, g) = e ? f : g.
        let ch = _mm512_ternarylogic_epi32::<0xCA>(e, $s[$f], $s[$g]);
        let kw = _mm512_add_epi32($w, _mm512_set1_epi32(K[$i] as i32));
        let t1 = _mm512_add_epi32(_mm512_add_epi32($s[$h], s1), _mm512_add_epi32(ch, kw));
        let a = $s[$a];
        let s0 = xor3!(
            _mm512_ror_epi32::<2>(a),
            _mm512_ror_epi32::<13>(a),
            _mm512_ror_epi32::<22>(a)
        );
        // Maj(a, b, c): the bit most of the three have.
        let maj = _mm512_ternarylogic_epi32::<0xE8>(a, $s[$b], $s[$c]);
        $s[$d] = _mm512_add_epi32($s[$d], t1);
        $s[$h] = _mm512_add_epi32(t1, _mm512_add_epi32(s0, maj));
    }};
}

/// W[i] (kept in `w[i % 16]`) from W[i-16], W[i-15], W[i-7] and W[i-2].
macro_rules! schedule {
    ($w:ident, $i:expr) => {{
        let x = $w[($i + 1) % 16];
        let s0 = xor3!(
            _mm512_ror_epi32::<7>(x),
            _mm512_ror_epi32::<18>(x),
            _mm512_srli_epi32::<3>(x)
        );
        let y = $w[($i + 14) % 16];
        let s1 = xor3!(
            _mm512_ror_epi32::<17>(y),
            _mm512_ror_epi32::<19>(y),
            _mm512_srli_epi32::<10>(y)
        );
        $w[$i % 16] = _mm512_add_epi32(
            _mm512_add_epi32($w[$i % 16], s0),
            _mm512_add_epi32($w[($i + 9) % 16], s1),
        );
    }};
}

/// Eight rounds from `$i` (a multiple of 8); after them A..H are back at indices 0..8.
macro_rules! rounds8 {
    ($s:ident, $w:ident, $i:expr, $sched:tt) => {{
        rounds8!(@one $sched, $s, $w, $i, 0, 1, 2, 3, 4, 5, 6, 7);
        rounds8!(@one $sched, $s, $w, $i + 1, 7, 0, 1, 2, 3, 4, 5, 6);
        rounds8!(@one $sched, $s, $w, $i + 2, 6, 7, 0, 1, 2, 3, 4, 5);
        rounds8!(@one $sched, $s, $w, $i + 3, 5, 6, 7, 0, 1, 2, 3, 4);
        rounds8!(@one $sched, $s, $w, $i + 4, 4, 5, 6, 7, 0, 1, 2, 3);
        rounds8!(@one $sched, $s, $w, $i + 5, 3, 4, 5, 6, 7, 0, 1, 2);
        rounds8!(@one $sched, $s, $w, $i + 6, 2, 3, 4, 5, 6, 7, 0, 1);
        rounds8!(@one $sched, $s, $w, $i + 7, 1, 2, 3, 4, 5, 6, 7, 0);
    }};
    (@one $sched:tt, $s:ident, $w:ident, $i:expr, $($x:expr),+) => {{
        rounds8!(@sched $sched, $w, $i);
        round!($s, $($x),+, $w[($i) % 16], $i);
    }};
    (@sched true, $w:ident, $i:expr) => {
        schedule!($w, $i)
    };
    (@sched false, $w:ident, $i:expr) => {};
}

/// Loads one block from each of the 16 pointers and transposes them: `w[j]` lane `i` is
/// word `j` (byte-swapped) of block `i`.
///
/// # Safety
/// The CPU must support the enabled features; each `ptrs[i]` must be valid for 64 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_transposed(ptrs: &[*const u8; LANES]) -> [__m512i; 16] {
    let mask = bswap_mask!();
    let mut r = [_mm512_set1_epi32(0); 16];
    for (r, p) in r.iter_mut().zip(ptrs) {
        // SAFETY: the caller guarantees 64 readable bytes at `p`; the load is unaligned.
        *r = _mm512_shuffle_epi8(unsafe { _mm512_loadu_si512(p.cast()) }, mask);
    }
    // Pairs of rows, 32-bit interleave: per 128-bit lane L, t[2p] = r[2p][4L], r[2p+1][4L],
    // r[2p][4L+1], r[2p+1][4L+1]; t[2p+1] the same with words 4L+2, 4L+3.
    let mut t = [_mm512_set1_epi32(0); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    // Quads of rows, 64-bit interleave: u[4g + c] lane L = rows 4g..4g+4, word 4L + c.
    let mut u = [_mm512_set1_epi32(0); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    // 128-bit lanes: word 4L + c of all 16 rows is lane L of u[c], u[4 + c], u[8 + c],
    // u[12 + c], gathered in two rounds of lane shuffles.
    let mut w = [_mm512_set1_epi32(0); 16];
    for c in 0..4 {
        let lo01 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let hi01 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let lo23 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let hi23 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        w[c] = _mm512_shuffle_i32x4::<0x88>(lo01, lo23);
        w[4 + c] = _mm512_shuffle_i32x4::<0xDD>(lo01, lo23);
        w[8 + c] = _mm512_shuffle_i32x4::<0x88>(hi01, hi23);
        w[12 + c] = _mm512_shuffle_i32x4::<0xDD>(hi01, hi23);
    }
    w
}

/// # Safety
/// The CPU must support the enabled features; `states.len() == blocks.len() <= LANES` and
/// every `blocks[i]` holds at least `nblocks` 64-byte blocks.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn compress_x16(states: &mut [[u32; 8]], blocks: &[&[u8]], nblocks: usize) {
    let mut ptrs = [ZERO_BLOCK.as_ptr(); LANES];
    let mut step = [0usize; LANES];
    for ((p, s), b) in ptrs.iter_mut().zip(&mut step).zip(blocks) {
        *p = b.as_ptr();
        *s = 64;
    }
    // Transposed state: `cols[j]` lane `i` is word `j` of stream `i`.
    let mut cols = [[0u32; LANES]; 8];
    for (i, st) in states.iter().enumerate() {
        for (c, &v) in cols.iter_mut().zip(st) {
            c[i] = v;
        }
    }
    let mut s = [_mm512_set1_epi32(0); 8];
    for (v, c) in s.iter_mut().zip(&cols) {
        // SAFETY: `c` is 16 u32 = 64 bytes.
        *v = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
    }
    for _ in 0..nblocks {
        // SAFETY: each pointer is block `k < nblocks` of its input (64 readable bytes, by the
        // caller's guarantee) or the static zero block.
        let mut w = unsafe { load_transposed(&ptrs) };
        let saved = s;
        rounds8!(s, w, 0, false);
        rounds8!(s, w, 8, false);
        rounds8!(s, w, 16, true);
        rounds8!(s, w, 24, true);
        rounds8!(s, w, 32, true);
        rounds8!(s, w, 40, true);
        rounds8!(s, w, 48, true);
        rounds8!(s, w, 56, true);
        for (v, o) in s.iter_mut().zip(saved) {
            *v = _mm512_add_epi32(*v, o);
        }
        for (p, &st) in ptrs.iter_mut().zip(&step) {
            // Past the last block the pointer is never read; `wrapping_add` keeps even that
            // one-past-the-end value free of any in-bounds requirement.
            *p = p.wrapping_add(st);
        }
    }
    for (c, v) in cols.iter_mut().zip(s) {
        // SAFETY: `c` is 16 u32 = 64 bytes, writable.
        unsafe { _mm512_storeu_si512(c.as_mut_ptr().cast(), v) };
    }
    for (i, st) in states.iter_mut().enumerate() {
        for (v, c) in st.iter_mut().zip(&cols) {
            *v = c[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::digest::generic_array::GenericArray;

    fn compress_ref(state: &mut [u32; 8], blocks: &[u8]) {
        for b in blocks.chunks_exact(64) {
            sha2::compress256(state, core::slice::from_ref(GenericArray::from_slice(b)));
        }
    }

    proptest! {
        /// Any number of lanes, any state, any contents, against `sha2::compress256` one
        /// stream at a time.
        #[test]
        fn x16_matches_compress256(
            lanes in 0usize..=LANES,
            nblocks in 0usize..5,
            seed in any::<u64>(),
        ) {
            let Some(t) = Avx512::detect() else {
                eprintln!("AVX-512 not available: kernel not tested");
                return Ok(());
            };
            let mut x = seed | 1;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let data: Vec<Vec<u8>> = (0..lanes)
                .map(|_| (0..nblocks * 64).map(|_| next() as u8).collect())
                .collect();
            let start: Vec<[u32; 8]> = (0..lanes)
                .map(|_| core::array::from_fn(|_| next() as u32))
                .collect();
            let mut got = start.clone();
            let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
            t.x16(&mut got, &refs);
            for ((mut want, d), g) in start.into_iter().zip(&data).zip(&got) {
                compress_ref(&mut want, d);
                prop_assert_eq!(&want, g);
            }
        }
    }

    #[test]
    #[should_panic(expected = "same whole number of blocks")]
    fn x16_rejects_unequal_inputs() {
        let Some(t) = Avx512::detect() else {
            panic!("same whole number of blocks (AVX-512 not available)");
        };
        let (a, b) = ([0u8; 64], [0u8; 128]);
        t.x16(&mut [[0; 8]; 2], &[&a, &b]);
    }
}
