//! x86_64 split-nibble kernels (AVX2 with 32-byte vectors, SSSE3 with 16-byte vectors).
//!
//! Both follow the scheme of [`super::kernel`]: per column chunk and row group, each input vector
//! is loaded once, split into its low and high nibbles, multiplied into every row's accumulator
//! with two `pshufb` table lookups, and each output vector is stored once. AVX2's `vpshufb` looks
//! up within each 128-bit lane, so the 16-byte tables are broadcast to both lanes
//! (`vbroadcasti128`, a plain load). Bytes past the last whole vector go to
//! [`super::kernel::nibble_tail`].
//!
//! Where the CPU has GFNI, `gfni_avx2` replaces the two lookups (and the nibble split) by one
//! `vgf2p8affineqb` per coefficient, with the coefficient as an 8×8 bit matrix
//! ([`super::kernel::affine_matrix`]). It is written with `asm!` because the GFNI intrinsics and
//! the `gfni` target feature are newer than the crate's minimum Rust version; the instruction
//! is only ever executed after `is_x86_feature_detected!("gfni")`.
//!
//! Soundness: the public entry points assert the CPU feature (a cached lookup) and the argument
//! shapes ([`Plan::check`]) before entering the `unsafe` `#[target_feature]` code, whose loads and
//! stores stay within `0..len` because they cover only whole vectors below `len`.

use super::kernel::{chunk_width, nibble_tail, Group, Plan, KIND_GENERAL, KIND_ZERO};
use std::arch::asm;
use std::arch::x86_64::*;

/// The AVX2 kernel (see [`super::kernel::KernelFn`]). Panics if the CPU lacks AVX2.
pub fn avx2(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let len = plan.check(inputs, outputs);
    assert!(
        std::is_x86_feature_detected!("avx2"),
        "avx2 kernel on a CPU without AVX2"
    );
    let vlen = len & !31;
    let width = chunk_width(plan.k());
    let mut start = 0;
    while start < vlen {
        // `width` is a multiple of 64, so `end` stays a multiple of 32.
        let end = (start + width).min(vlen);
        for g in plan.groups() {
            let outs = &mut outputs[g.first..g.first + g.size];
            // SAFETY: AVX2 is present (asserted above). `check` established that there are
            // `plan.k()` inputs and the group's `g.size` outputs, all `len` bytes long, and the
            // group's tables/kinds/coeffs have the plan's shape; `start..end` is a range of
            // whole 32-byte vectors below `vlen <= len`.
            unsafe {
                match g.size {
                    1 => avx2_group::<1>(&g, inputs, outs, start, end),
                    2 => avx2_group::<2>(&g, inputs, outs, start, end),
                    3 => avx2_group::<3>(&g, inputs, outs, start, end),
                    4 => avx2_group::<4>(&g, inputs, outs, start, end),
                    5 => avx2_group::<5>(&g, inputs, outs, start, end),
                    6 => avx2_group::<6>(&g, inputs, outs, start, end),
                    7 => avx2_group::<7>(&g, inputs, outs, start, end),
                    _ => avx2_group::<8>(&g, inputs, outs, start, end),
                }
            }
        }
        start = end;
    }
    if vlen < len {
        nibble_tail(plan, inputs, outputs, vlen);
    }
}

/// Rows `g.first..g.first + G` over columns `start..end` (whole 32-byte vectors).
///
/// Safety: the CPU has AVX2; `g.size == G == outs.len()`; `g.kinds.len() == inputs.len()`,
/// `g.tables.len() == g.coeffs.len() == G * inputs.len()`; every input and output is at least
/// `end` bytes long; `end - start` is a multiple of 32.
#[target_feature(enable = "avx2")]
unsafe fn avx2_group<const G: usize>(
    g: &Group<'_>,
    inputs: &[&[u8]],
    outs: &mut [&mut [u8]],
    start: usize,
    end: usize,
) {
    debug_assert!(g.size == G && outs.len() == G && (end - start).is_multiple_of(32));
    let k = inputs.len();
    let mask = _mm256_set1_epi8(0x0f);
    let tabs = g.tables.as_ptr() as *const u8;
    let mut off = start;
    while off < end {
        let mut acc = [_mm256_setzero_si256(); G];
        for j in 0..k {
            let kind = *g.kinds.get_unchecked(j);
            if kind == KIND_ZERO {
                continue;
            }
            let x = _mm256_loadu_si256(inputs.get_unchecked(j).as_ptr().add(off).cast());
            if kind == KIND_GENERAL {
                let lo = _mm256_and_si256(x, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi64::<4>(x), mask);
                let t = tabs.add(j * G * 32);
                for (r, a) in acc.iter_mut().enumerate() {
                    let tl = _mm256_broadcastsi128_si256(_mm_loadu_si128(t.add(r * 32).cast()));
                    let th =
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(t.add(r * 32 + 16).cast()));
                    let p =
                        _mm256_xor_si256(_mm256_shuffle_epi8(tl, lo), _mm256_shuffle_epi8(th, hi));
                    *a = _mm256_xor_si256(*a, p);
                }
            } else {
                // Every coefficient of this input in the group is 0 or 1.
                for (r, a) in acc.iter_mut().enumerate() {
                    if *g.coeffs.get_unchecked(r * k + j) == 1 {
                        *a = _mm256_xor_si256(*a, x);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(outs.get_unchecked_mut(r).as_mut_ptr().add(off).cast(), *a);
        }
        off += 32;
    }
}

/// The SSSE3 kernel (see [`super::kernel::KernelFn`]). Panics if the CPU lacks SSSE3.
pub fn ssse3(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let len = plan.check(inputs, outputs);
    assert!(
        std::is_x86_feature_detected!("ssse3"),
        "ssse3 kernel on a CPU without SSSE3"
    );
    let vlen = len & !15;
    let width = chunk_width(plan.k());
    let mut start = 0;
    while start < vlen {
        let end = (start + width).min(vlen);
        for g in plan.groups() {
            let outs = &mut outputs[g.first..g.first + g.size];
            // SAFETY: as in `avx2`, with SSSE3 asserted and 16-byte vectors below `vlen <= len`.
            unsafe {
                match g.size {
                    1 => ssse3_group::<1>(&g, inputs, outs, start, end),
                    2 => ssse3_group::<2>(&g, inputs, outs, start, end),
                    3 => ssse3_group::<3>(&g, inputs, outs, start, end),
                    4 => ssse3_group::<4>(&g, inputs, outs, start, end),
                    5 => ssse3_group::<5>(&g, inputs, outs, start, end),
                    6 => ssse3_group::<6>(&g, inputs, outs, start, end),
                    7 => ssse3_group::<7>(&g, inputs, outs, start, end),
                    _ => ssse3_group::<8>(&g, inputs, outs, start, end),
                }
            }
        }
        start = end;
    }
    if vlen < len {
        nibble_tail(plan, inputs, outputs, vlen);
    }
}

/// Rows `g.first..g.first + G` over columns `start..end` (whole 16-byte vectors).
///
/// Safety: as [`avx2_group`], with SSSE3 instead of AVX2 and 16-byte vectors.
#[target_feature(enable = "ssse3")]
unsafe fn ssse3_group<const G: usize>(
    g: &Group<'_>,
    inputs: &[&[u8]],
    outs: &mut [&mut [u8]],
    start: usize,
    end: usize,
) {
    debug_assert!(g.size == G && outs.len() == G && (end - start).is_multiple_of(16));
    let k = inputs.len();
    let mask = _mm_set1_epi8(0x0f);
    let tabs = g.tables.as_ptr() as *const u8;
    let mut off = start;
    while off < end {
        let mut acc = [_mm_setzero_si128(); G];
        for j in 0..k {
            let kind = *g.kinds.get_unchecked(j);
            if kind == KIND_ZERO {
                continue;
            }
            let x = _mm_loadu_si128(inputs.get_unchecked(j).as_ptr().add(off).cast());
            if kind == KIND_GENERAL {
                let lo = _mm_and_si128(x, mask);
                let hi = _mm_and_si128(_mm_srli_epi64::<4>(x), mask);
                let t = tabs.add(j * G * 32);
                for (r, a) in acc.iter_mut().enumerate() {
                    let tl = _mm_loadu_si128(t.add(r * 32).cast());
                    let th = _mm_loadu_si128(t.add(r * 32 + 16).cast());
                    let p = _mm_xor_si128(_mm_shuffle_epi8(tl, lo), _mm_shuffle_epi8(th, hi));
                    *a = _mm_xor_si128(*a, p);
                }
            } else {
                for (r, a) in acc.iter_mut().enumerate() {
                    if *g.coeffs.get_unchecked(r * k + j) == 1 {
                        *a = _mm_xor_si128(*a, x);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm_storeu_si128(outs.get_unchecked_mut(r).as_mut_ptr().add(off).cast(), *a);
        }
        off += 16;
    }
}

/// The GFNI + AVX2 kernel (see [`super::kernel::KernelFn`]). Panics if the CPU lacks either.
pub fn gfni_avx2(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let len = plan.check(inputs, outputs);
    assert!(
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("gfni"),
        "gfni kernel on a CPU without AVX2 and GFNI"
    );
    let vlen = len & !31;
    let width = chunk_width(plan.k());
    let mut start = 0;
    while start < vlen {
        let end = (start + width).min(vlen);
        for g in plan.groups() {
            let outs = &mut outputs[g.first..g.first + g.size];
            // SAFETY: as in `avx2`, with AVX2 and GFNI asserted; `g.affine` has the shape of
            // `g.tables`.
            unsafe {
                match g.size {
                    1 => gfni_group::<1>(&g, inputs, outs, start, end),
                    2 => gfni_group::<2>(&g, inputs, outs, start, end),
                    3 => gfni_group::<3>(&g, inputs, outs, start, end),
                    4 => gfni_group::<4>(&g, inputs, outs, start, end),
                    5 => gfni_group::<5>(&g, inputs, outs, start, end),
                    6 => gfni_group::<6>(&g, inputs, outs, start, end),
                    7 => gfni_group::<7>(&g, inputs, outs, start, end),
                    _ => gfni_group::<8>(&g, inputs, outs, start, end),
                }
            }
        }
        start = end;
    }
    if vlen < len {
        nibble_tail(plan, inputs, outputs, vlen);
    }
}

/// Rows `g.first..g.first + G` over columns `start..end` (whole 32-byte vectors).
///
/// Safety: as [`avx2_group`], and the CPU has GFNI; `g.affine.len() == G * inputs.len()`.
#[target_feature(enable = "avx2")]
unsafe fn gfni_group<const G: usize>(
    g: &Group<'_>,
    inputs: &[&[u8]],
    outs: &mut [&mut [u8]],
    start: usize,
    end: usize,
) {
    debug_assert!(g.size == G && outs.len() == G && (end - start).is_multiple_of(32));
    let k = inputs.len();
    let aff = g.affine.as_ptr();
    let mut off = start;
    while off < end {
        let mut acc = [_mm256_setzero_si256(); G];
        for j in 0..k {
            let kind = *g.kinds.get_unchecked(j);
            if kind == KIND_ZERO {
                continue;
            }
            let x = _mm256_loadu_si256(inputs.get_unchecked(j).as_ptr().add(off).cast());
            if kind == KIND_GENERAL {
                for (r, a) in acc.iter_mut().enumerate() {
                    let m = _mm256_set1_epi64x(*aff.add(j * G + r) as i64);
                    let p: __m256i;
                    // Intel syntax: p = affine(x by the matrix in each qword of m), imm8 = 0.
                    asm!(
                        "vgf2p8affineqb {p}, {x}, {m}, 0",
                        p = lateout(ymm_reg) p,
                        x = in(ymm_reg) x,
                        m = in(ymm_reg) m,
                        options(pure, nomem, nostack, preserves_flags)
                    );
                    *a = _mm256_xor_si256(*a, p);
                }
            } else {
                for (r, a) in acc.iter_mut().enumerate() {
                    if *g.coeffs.get_unchecked(r * k + j) == 1 {
                        *a = _mm256_xor_si256(*a, x);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(outs.get_unchecked_mut(r).as_mut_ptr().add(off).cast(), *a);
        }
        off += 32;
    }
}
