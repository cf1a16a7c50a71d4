//! The one hot loop of the codec: `out[r] = Σ_j coeff[r][j] · in[j]` over GF(2^8), for several
//! outputs at once.
//!
//! Design:
//! - A coefficient matrix is turned once into a [`Plan`]: the coefficients, and for each one the
//!   two 16-entry "split nibble" tables `lo[i] = c·i` and `hi[i] = c·(i << 4)`, so that
//!   `c·x = lo[x & 15] ^ hi[x >> 4]` (multiplication distributes over XOR). The plan is
//!   independent of the instruction set; [`super::Codec`] caches the plan of its parity matrix
//!   and [`super::Decoder`] holds the plan of its inverse rows, so tables are built once per
//!   matrix, not once per call.
//! - Output rows are processed in groups of [`GROUP`]. A SIMD kernel keeps one accumulator
//!   register per row of the group, loads each input vector once, multiplies it into every
//!   accumulator with two table shuffles, and stores each output vector once ("fused").
//! - Columns are processed in chunks sized so the chunk of every input stays in L1 while each row
//!   group passes over it.
//! - Per (group, input) the plan records whether the coefficients are all zero (skip the input),
//!   all 0 or 1 (plain XOR, no shuffles; e.g. every k = 1 code), or general.
//! - Bytes that do not fill a vector are done by `nibble_tail` with the same tables.
//! - Kernels: `scalar` (64 KiB table), `nibble` (the split-nibble math byte by byte), and at run
//!   time `ssse3`, `avx2` and `gfni-avx2` on x86_64 (the last uses one affine instruction per
//!   coefficient, from the plan's 8×8 bit matrices) or `neon` on aarch64.
//!
//! Every kernel writes identical bytes; the property tests in `codec` hold them to the scalar
//! one, whose 64 KiB table comes straight from the field definition in [`super::gf`].
//!
//! Kernels check the shapes of their arguments and panic on a mismatch: [`super::Codec`] and
//! [`super::Decoder`] validate untrusted lengths before calling, so a panic here is a bug in the
//! codec, and the checks are what make the unsafe SIMD loads and stores in bounds.

use super::gf;

/// Output rows per group: every SIMD kernel keeps this many accumulators in registers (x86_64
/// and aarch64 both have at least 16 vector registers; a group needs `GROUP + 6`).
pub const GROUP: usize = 8;

/// Column kind of one input within one row group (see the module docs).
pub(crate) const KIND_ZERO: u8 = 0;
pub(crate) const KIND_XOR: u8 = 1;
pub(crate) const KIND_GENERAL: u8 = 2;

/// A coefficient matrix prepared for the kernels.
#[derive(Clone)]
pub struct Plan {
    rows: usize,
    k: usize,
    /// Row-major `rows × k`.
    coeffs: Vec<u8>,
    /// Nibble tables (`lo` in bytes 0..16, `hi` in bytes 16..32), group-major: group `g` starts
    /// at `g * GROUP * k` and holds, for each input `j`, the entries of its rows in order.
    tables: Vec<[u8; 32]>,
    /// The same coefficients as 8×8 bit matrices for GFNI's `gf2p8affineqb`, in the order of
    /// `tables` (see [`affine_matrix`]).
    affine: Vec<u64>,
    /// `kinds[g * k + j]`: the [`KIND_ZERO`]/[`KIND_XOR`]/[`KIND_GENERAL`] of input `j` in group `g`.
    kinds: Vec<u8>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plan({}×{})", self.rows, self.k)
    }
}

/// One row group of a plan, as the kernels see it.
pub(crate) struct Group<'a> {
    /// Index of the group's first row.
    pub first: usize,
    /// Number of rows, `1..=GROUP`.
    pub size: usize,
    /// `tables[j * size + r]` for input `j` and row `first + r`.
    pub tables: &'a [[u8; 32]],
    /// `affine[j * size + r]`, like `tables`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub affine: &'a [u64],
    /// `kinds[j]`.
    pub kinds: &'a [u8],
    /// Row-major `size × k` coefficients.
    pub coeffs: &'a [u8],
}

impl Plan {
    /// Prepares the row-major matrix `coeffs` with `k` columns.
    ///
    /// Panics if `k == 0` or `coeffs.len()` is not a multiple of `k` (a caller bug).
    pub fn new(coeffs: &[u8], k: usize) -> Plan {
        assert!(k > 0 && coeffs.len().is_multiple_of(k), "plan shape");
        let rows = coeffs.len() / k;
        let t = gf::tables();
        let mut tables = Vec::with_capacity(rows * k);
        let mut affine = Vec::with_capacity(rows * k);
        let mut kinds = Vec::with_capacity(rows.div_ceil(GROUP) * k);
        for first in (0..rows).step_by(GROUP) {
            let size = GROUP.min(rows - first);
            for j in 0..k {
                let mut kind = KIND_ZERO;
                for r in first..first + size {
                    let c = coeffs[r * k + j];
                    let m = &t.mul[c as usize];
                    let mut e = [0u8; 32];
                    for i in 0..16 {
                        e[i] = m[i];
                        e[16 + i] = m[i << 4];
                    }
                    tables.push(e);
                    affine.push(affine_matrix(c));
                    kind = kind.max(match c {
                        0 => KIND_ZERO,
                        1 => KIND_XOR,
                        _ => KIND_GENERAL,
                    });
                }
                kinds.push(kind);
            }
        }
        Plan {
            rows,
            k,
            coeffs: coeffs.to_vec(),
            tables,
            affine,
            kinds,
        }
    }

    /// Number of output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of inputs (columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The row-major coefficients.
    pub fn coeffs(&self) -> &[u8] {
        &self.coeffs
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = Group<'_>> {
        let k = self.k;
        (0..self.rows).step_by(GROUP).map(move |first| {
            let size = GROUP.min(self.rows - first);
            let g = first / GROUP;
            Group {
                first,
                size,
                tables: &self.tables[first * k..(first + size) * k],
                affine: &self.affine[first * k..(first + size) * k],
                kinds: &self.kinds[g * k..(g + 1) * k],
                coeffs: &self.coeffs[first * k..(first + size) * k],
            }
        })
    }

    /// Checks the shapes of a kernel call and returns the common length. This is what makes the
    /// SIMD kernels' unchecked accesses in bounds.
    pub(crate) fn check(&self, inputs: &[&[u8]], outputs: &[&mut [u8]]) -> usize {
        assert_eq!(inputs.len(), self.k, "kernel: input count");
        assert_eq!(outputs.len(), self.rows, "kernel: output count");
        let len = inputs.first().map_or(0, |b| b.len());
        assert!(
            inputs.iter().all(|b| b.len() == len) && outputs.iter().all(|b| b.len() == len),
            "kernel: unequal lengths"
        );
        len
    }
}

/// Multiplication by `c` as the 8×8 bit matrix of x86 GFNI's `gf2p8affineqb`: output bit `i`
/// of a byte is the parity of `x AND` byte `7 - i` of the matrix, so byte `7 - i` holds, at bit
/// `j`, bit `i` of `c·2^j` (multiplication by `c` is linear over GF(2), so the images of the
/// eight basis bytes `2^j` determine it). This works for any field polynomial, 0x11D included.
pub(crate) fn affine_matrix(c: u8) -> u64 {
    let m = &gf::tables().mul[c as usize];
    let mut q = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            row |= ((m[1 << j] >> i) & 1) << j;
        }
        q |= u64::from(row) << (8 * (7 - i));
    }
    q
}

/// A matrix-times-blocks kernel: `outputs[r] = Σ_j plan.coeffs[r][j] · inputs[j]`. Every input
/// and output has the same length; outputs are overwritten. Panics on a shape mismatch.
pub type KernelFn = fn(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]);

/// Column chunk width (a multiple of 64) for `k` inputs: about 16 KiB of input per chunk, so the
/// chunk stays in L1 while every row group passes over it, at most 4 KiB per input.
pub(crate) fn chunk_width(k: usize) -> usize {
    ((16 * 1024 / k.max(1)) & !63).clamp(64, 4096)
}

/// The portable implementation: the full 64 KiB multiplication table.
pub fn scalar(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    plan.check(inputs, outputs);
    let k = plan.k;
    let t = gf::tables();
    for (r, out) in outputs.iter_mut().enumerate() {
        let row = &plan.coeffs[r * k..(r + 1) * k];
        out.fill(0);
        for (&c, input) in row.iter().zip(inputs) {
            match c {
                0 => {}
                1 => {
                    for (o, i) in out.iter_mut().zip(input.iter()) {
                        *o ^= *i;
                    }
                }
                _ => {
                    let m = &t.mul[c as usize];
                    for (o, i) in out.iter_mut().zip(input.iter()) {
                        *o ^= m[*i as usize];
                    }
                }
            }
        }
    }
}

/// Columns `from..` of every output with the split-nibble tables, one byte at a time: the tail
/// of the SIMD kernels (same math, so the same bytes).
pub(crate) fn nibble_tail(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]], from: usize) {
    let k = plan.k;
    for g in plan.groups() {
        for r in 0..g.size {
            let out = &mut outputs[g.first + r][from..];
            out.fill(0);
            for (j, input) in inputs.iter().enumerate() {
                let e = &g.tables[j * g.size + r];
                if g.coeffs[r * k + j] == 0 {
                    continue;
                }
                for (o, &x) in out.iter_mut().zip(&input[from..]) {
                    *o ^= e[(x & 15) as usize] ^ e[16 + (x >> 4) as usize];
                }
            }
        }
    }
}

/// The split-nibble math without SIMD (a reference for the tail code the SIMD kernels share).
pub fn nibble(plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    plan.check(inputs, outputs);
    nibble_tail(plan, inputs, outputs, 0);
}

/// The fastest kernel this CPU supports.
pub fn best() -> KernelFn {
    available()
        .last()
        .map(|&(_, f)| f)
        .unwrap_or(scalar as KernelFn)
}

/// Every kernel this CPU can run, by name, slowest first (for tests and benchmarks).
pub fn available() -> Vec<(&'static str, KernelFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, KernelFn)> = vec![
        ("nibble", nibble as KernelFn),
        ("scalar", scalar as KernelFn),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("ssse3") {
            v.push(("ssse3", super::x86::ssse3 as KernelFn));
        }
        if std::is_x86_feature_detected!("avx2") {
            v.push(("avx2", super::x86::avx2 as KernelFn));
            if std::is_x86_feature_detected!("gfni") {
                v.push(("gfni-avx2", super::x86::gfni_avx2 as KernelFn));
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push(("neon", super::neon::neon as KernelFn));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_matrix_known_answers() {
        // Intel documents 0x0102040810204080 as the identity matrix of gf2p8affineqb.
        assert_eq!(affine_matrix(1), 0x0102_0408_1020_4080);
        assert_eq!(affine_matrix(0), 0);
        // Bit-level emulation of the instruction (Intel's pseudo-code) against the field.
        let emulate = |q: u64, x: u8| -> u8 {
            (0..8).fold(0u8, |acc, i| {
                let row = (q >> (8 * (7 - i))) as u8;
                acc | ((((row & x).count_ones() & 1) as u8) << i)
            })
        };
        for c in 0..=255u8 {
            let q = affine_matrix(c);
            for x in 0..=255u8 {
                assert_eq!(emulate(q, x), gf::mul(c, x), "c={c} x={x}");
            }
        }
    }

    #[test]
    fn chunk_width_is_whole_vectors() {
        for k in 1..=256 {
            let w = chunk_width(k);
            assert!(
                w.is_multiple_of(64) && (64..=4096).contains(&w),
                "k={k} w={w}"
            );
        }
    }
}
