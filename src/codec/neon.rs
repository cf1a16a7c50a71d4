//! aarch64 split-nibble kernel with NEON `tbl` (`vqtbl1q_u8`) on 16-byte vectors.
//!
//! Same scheme as [`super::x86`]: per column chunk and row group, each input vector is loaded
//! once, split into nibbles (`and 15`, `ushr 4`), looked up in each row's 16-entry `lo`/`hi`
//! tables and XORed into that row's accumulator; each output vector is stored once. Indices are
//! always below 16, so `tbl` never takes its out-of-range (zero) path. Bytes past the last whole
//! vector go to [`super::kernel::nibble_tail`].
//!
//! Soundness: NEON is part of the aarch64 baseline, so no run-time detection is needed; the entry
//! point asserts the argument shapes ([`Plan::check`]) before the `unsafe` code, whose loads and
//! stores cover only whole vectors below `len`.

use super::kernel::{chunk_width, nibble_tail, Group, Plan, KIND_GENERAL, KIND_ZERO};
use std::arch::aarch64::*;

/// The NEON kernel (see [`super::kernel::KernelFn`]).
pub fn neon(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let len = plan.check(inputs, outputs);
    let vlen = len & !15;
    let width = chunk_width(plan.k());
    let mut start = 0;
    while start < vlen {
        let end = (start + width).min(vlen);
        for g in plan.groups() {
            let outs = &mut outputs[g.first..g.first + g.size];
            // SAFETY: NEON is baseline on aarch64. `check` established that there are
            // `plan.k()` inputs and the group's `g.size` outputs, all `len` bytes long, and the
            // group's tables/kinds/coeffs have the plan's shape; `start..end` is a range of
            // whole 16-byte vectors below `vlen <= len`.
            unsafe {
                match g.size {
                    1 => neon_group::<1>(&g, inputs, outs, start, end),
                    2 => neon_group::<2>(&g, inputs, outs, start, end),
                    3 => neon_group::<3>(&g, inputs, outs, start, end),
                    4 => neon_group::<4>(&g, inputs, outs, start, end),
                    5 => neon_group::<5>(&g, inputs, outs, start, end),
                    6 => neon_group::<6>(&g, inputs, outs, start, end),
                    7 => neon_group::<7>(&g, inputs, outs, start, end),
                    _ => neon_group::<8>(&g, inputs, outs, start, end),
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
/// Safety: `g.size == G == outs.len()`; `g.kinds.len() == inputs.len()`,
/// `g.tables.len() == g.coeffs.len() == G * inputs.len()`; every input and output is at least
/// `end` bytes long; `end - start` is a multiple of 16.
unsafe fn neon_group<const G: usize>(
    g: &Group<'_>,
    inputs: &[&[u8]],
    outs: &mut [&mut [u8]],
    start: usize,
    end: usize,
) {
    debug_assert!(g.size == G && outs.len() == G && (end - start).is_multiple_of(16));
    let k = inputs.len();
    let mask = vdupq_n_u8(0x0f);
    let tabs = g.tables.as_ptr() as *const u8;
    let mut off = start;
    while off < end {
        let mut acc = [vdupq_n_u8(0); G];
        for j in 0..k {
            let kind = *g.kinds.get_unchecked(j);
            if kind == KIND_ZERO {
                continue;
            }
            let x = vld1q_u8(inputs.get_unchecked(j).as_ptr().add(off));
            if kind == KIND_GENERAL {
                let lo = vandq_u8(x, mask);
                let hi = vshrq_n_u8::<4>(x);
                let t = tabs.add(j * G * 32);
                for (r, a) in acc.iter_mut().enumerate() {
                    let tl = vld1q_u8(t.add(r * 32));
                    let th = vld1q_u8(t.add(r * 32 + 16));
                    let p = veorq_u8(vqtbl1q_u8(tl, lo), vqtbl1q_u8(th, hi));
                    *a = veorq_u8(*a, p);
                }
            } else {
                // Every coefficient of this input in the group is 0 or 1.
                for (r, a) in acc.iter_mut().enumerate() {
                    if *g.coeffs.get_unchecked(r * k + j) == 1 {
                        *a = veorq_u8(*a, x);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            vst1q_u8(outs.get_unchecked_mut(r).as_mut_ptr().add(off), *a);
        }
        off += 16;
    }
}
