//! An erasure codec byte-identical to zfec (Tahoe's "crs" codec) for every 1 ≤ k ≤ n ≤ 256.
//!
//! Design: the systematic encoding matrix is zfec's (see [`matrix`]); shares `0..k` are the input
//! pieces themselves and shares `k..n` are matrix rows applied to them. All byte work goes through
//! one fused kernel ([`kernel`]) that computes several outputs from the same inputs in one pass,
//! with SIMD implementations selected at run time. Decoding inverts the k×k submatrix of the shares
//! at hand once per share set ([`Decoder`]) and then only rebuilds the missing primary pieces.

pub mod gf;
pub mod kernel;
pub mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::{Arc, OnceLock};

use thiserror::Error;

/// Codec errors. Share ids and lengths come from untrusted servers, so they are checked, never
/// assumed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("codec: parameters k={k}, n={n} are outside 1 <= k <= n <= 256")]
    BadParameters { k: usize, n: usize },
    #[error("codec: expected {expected} blocks, got {got}")]
    WrongBlockCount { expected: usize, got: usize },
    #[error("codec: blocks have different lengths")]
    UnequalBlocks,
    #[error("codec: share id {0} is out of range")]
    BadShareId(usize),
    #[error("codec: share id {0} given twice")]
    DuplicateShareId(usize),
}

/// A k-of-n zfec-compatible encoder and decoder.
#[derive(Clone)]
pub struct Codec {
    k: usize,
    n: usize,
    parity: matrix::Matrix,
    /// The kernel plan of all parity rows, built on first use and shared by clones.
    parity_plan: Arc<OnceLock<kernel::Plan>>,
    kernel: kernel::KernelFn,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({}-of-{})", self.k, self.n)
    }
}

impl Codec {
    pub fn new(k: usize, n: usize) -> Result<Self, CodecError> {
        Self::with_kernel(k, n, kernel::best())
    }

    /// A codec using a specific kernel (tests compare kernels with this).
    pub fn with_kernel(k: usize, n: usize, kernel: kernel::KernelFn) -> Result<Self, CodecError> {
        if k == 0 || k > n || n > 256 {
            return Err(CodecError::BadParameters { k, n });
        }
        Ok(Codec {
            k,
            n,
            parity: matrix::parity_rows(k, n),
            parity_plan: Arc::new(OnceLock::new()),
            kernel,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The (n-k)×k parity coefficient rows.
    pub fn parity_matrix(&self) -> &matrix::Matrix {
        &self.parity
    }

    /// Computes parity shares `k..n` from the `k` input pieces into `parity` (n-k buffers).
    pub fn encode(&self, inputs: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        self.encode_some(inputs, &(self.k..self.n).collect::<Vec<_>>(), parity)
    }

    /// Computes the given parity shares (each id in `k..n`) into `outputs`.
    pub fn encode_some(
        &self,
        inputs: &[&[u8]],
        share_ids: &[usize],
        outputs: &mut [&mut [u8]],
    ) -> Result<(), CodecError> {
        if inputs.len() != self.k {
            return Err(CodecError::WrongBlockCount {
                expected: self.k,
                got: inputs.len(),
            });
        }
        if outputs.len() != share_ids.len() {
            return Err(CodecError::WrongBlockCount {
                expected: share_ids.len(),
                got: outputs.len(),
            });
        }
        let len = inputs[0].len();
        if inputs.iter().any(|b| b.len() != len) || outputs.iter().any(|b| b.len() != len) {
            return Err(CodecError::UnequalBlocks);
        }
        if let Some(&id) = share_ids.iter().find(|&&id| id < self.k || id >= self.n) {
            return Err(CodecError::BadShareId(id));
        }
        if outputs.is_empty() || len == 0 {
            return Ok(());
        }
        let all_parity = share_ids.len() == self.n - self.k
            && share_ids
                .iter()
                .enumerate()
                .all(|(i, &id)| id == self.k + i);
        if all_parity {
            let plan = self
                .parity_plan
                .get_or_init(|| kernel::Plan::new(&self.parity.data, self.k));
            (self.kernel)(plan, inputs, outputs);
        } else {
            let mut coeffs = Vec::with_capacity(share_ids.len() * self.k);
            for &id in share_ids {
                coeffs.extend_from_slice(self.parity.row(id - self.k));
            }
            (self.kernel)(&kernel::Plan::new(&coeffs, self.k), inputs, outputs);
        }
        Ok(())
    }

    /// Prepares decoding from the shares with these ids (exactly k distinct ids below n).
    pub fn decoder(&self, share_ids: &[usize]) -> Result<Decoder, CodecError> {
        Decoder::new(self, share_ids)
    }
}

/// Decoding from one fixed set of k share ids; reusable for every segment of a file.
#[derive(Clone, Debug)]
pub struct Decoder {
    k: usize,
    share_ids: Vec<usize>,
    /// For each primary piece `j`, the position of share `j` among `share_ids`, if present.
    present: Vec<Option<usize>>,
    /// Primary pieces that must be recomputed.
    missing: Vec<usize>,
    /// Rows of the inverse for the missing pieces (`missing.len() × k`), prepared for the kernel;
    /// `None` when no piece is missing.
    plan: Option<kernel::Plan>,
    kernel: kernel::KernelFn,
}

impl Decoder {
    fn new(codec: &Codec, share_ids: &[usize]) -> Result<Self, CodecError> {
        let k = codec.k;
        if share_ids.len() != k {
            return Err(CodecError::WrongBlockCount {
                expected: k,
                got: share_ids.len(),
            });
        }
        let mut seen = vec![false; codec.n];
        for &id in share_ids {
            if id >= codec.n {
                return Err(CodecError::BadShareId(id));
            }
            if seen[id] {
                return Err(CodecError::DuplicateShareId(id));
            }
            seen[id] = true;
        }
        let mut present = vec![None; k];
        for (pos, &id) in share_ids.iter().enumerate() {
            if id < k {
                present[id] = Some(pos);
            }
        }
        let missing: Vec<usize> = (0..k).filter(|&j| present[j].is_none()).collect();
        let mut plan = None;
        if !missing.is_empty() {
            let mut m = matrix::Matrix::zero(k, k);
            for (r, &id) in share_ids.iter().enumerate() {
                if id < k {
                    m.set(r, id, 1);
                } else {
                    for c in 0..k {
                        m.set(r, c, codec.parity.at(id - k, c));
                    }
                }
            }
            let inv = m
                .invert()
                .expect("any k distinct rows of zfec's matrix are independent");
            let mut coeffs = Vec::with_capacity(missing.len() * k);
            for &j in &missing {
                coeffs.extend_from_slice(inv.row(j));
            }
            plan = Some(kernel::Plan::new(&coeffs, k));
        }
        Ok(Decoder {
            k,
            share_ids: share_ids.to_vec(),
            present,
            missing,
            plan,
            kernel: codec.kernel,
        })
    }

    pub fn share_ids(&self) -> &[usize] {
        &self.share_ids
    }

    /// Rebuilds the k primary pieces from `blocks` (in the order of `share_ids`) into `outputs`.
    pub fn decode(&self, blocks: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<(), CodecError> {
        if blocks.len() != self.k || outputs.len() != self.k {
            return Err(CodecError::WrongBlockCount {
                expected: self.k,
                got: blocks.len().min(outputs.len()),
            });
        }
        let len = self.block_len(blocks)?;
        if outputs.iter().any(|b| b.len() != len) {
            return Err(CodecError::UnequalBlocks);
        }
        for (j, out) in outputs.iter_mut().enumerate() {
            if let Some(pos) = self.present[j] {
                out.copy_from_slice(blocks[pos]);
            }
        }
        self.rebuild_missing(blocks, outputs, len);
        Ok(())
    }

    /// Rebuilds the k primary pieces from `blocks` like [`Decoder::decode`], appended to `out`
    /// one after the other (`k * len` bytes). Pieces whose share is among `blocks` are copied
    /// straight in; only the missing ones are zero-filled before the kernel writes them, so a
    /// caller building a segment in a `Vec` does not clear bytes that are overwritten at once.
    pub fn decode_append(&self, blocks: &[&[u8]], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let len = self.block_len(blocks)?;
        let start = out.len();
        out.reserve(self.k * len);
        for j in 0..self.k {
            match self.present[j] {
                Some(pos) => out.extend_from_slice(blocks[pos]),
                None => out.resize(out.len() + len, 0),
            }
        }
        if len > 0 {
            let mut pieces: Vec<&mut [u8]> = out[start..].chunks_exact_mut(len).collect();
            self.rebuild_missing(blocks, &mut pieces, len);
        }
        Ok(())
    }

    /// The length of the blocks: `blocks` must be k blocks of one length.
    fn block_len(&self, blocks: &[&[u8]]) -> Result<usize, CodecError> {
        if blocks.len() != self.k {
            return Err(CodecError::WrongBlockCount {
                expected: self.k,
                got: blocks.len(),
            });
        }
        let len = blocks[0].len();
        if blocks.iter().any(|b| b.len() != len) {
            return Err(CodecError::UnequalBlocks);
        }
        Ok(len)
    }

    /// Runs the kernel for the missing pieces among the k `pieces` of `len` bytes (the present
    /// ones are already in place; the missing ones are written whole).
    fn rebuild_missing(&self, blocks: &[&[u8]], pieces: &mut [&mut [u8]], len: usize) {
        if let (Some(plan), true) = (&self.plan, len > 0) {
            let mut miss: Vec<&mut [u8]> = Vec::with_capacity(self.missing.len());
            for (j, piece) in pieces.iter_mut().enumerate() {
                if self.present[j].is_none() {
                    miss.push(&mut **piece);
                }
            }
            (self.kernel)(plan, blocks, &mut miss);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(codec: &Codec, data: &[u8]) -> Vec<Vec<u8>> {
        let k = codec.k();
        let bl = data.len() / k;
        let pieces: Vec<&[u8]> = data.chunks(bl).collect();
        let mut parity = vec![vec![0u8; bl]; codec.n() - k];
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|v| &mut v[..]).collect();
        codec.encode(&pieces, &mut outs).unwrap();
        pieces.iter().map(|p| p.to_vec()).chain(parity).collect()
    }

    /// `out[r] = Σ_j c[r][j]·in[j]` straight from the field definition (log/exp tables), one byte
    /// at a time: the reference model every kernel is held to.
    fn reference(coeffs: &[u8], inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let k = inputs.len();
        let len = inputs[0].len();
        let t = gf::tables();
        let mul = |a: u8, b: u8| {
            if a == 0 || b == 0 {
                0
            } else {
                t.exp[t.log[a as usize] as usize + t.log[b as usize] as usize]
            }
        };
        coeffs
            .chunks(k)
            .map(|row| {
                (0..len)
                    .map(|i| {
                        row.iter()
                            .zip(inputs)
                            .fold(0, |acc, (&c, x)| acc ^ mul(c, x[i]))
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs every available kernel on `coeffs × inputs` (outputs pre-filled with junk, which
    /// must be overwritten) and compares with [`reference`].
    fn check_kernels(coeffs: &[u8], inputs: &[Vec<u8>]) -> Result<(), TestCaseError> {
        let k = inputs.len();
        let len = inputs[0].len();
        let rows = coeffs.len() / k;
        let expect = reference(coeffs, inputs);
        let plan = kernel::Plan::new(coeffs, k);
        let ins: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
        for (name, f) in kernel::available() {
            let mut got = vec![vec![0xAAu8; len]; rows];
            let mut g: Vec<&mut [u8]> = got.iter_mut().map(|v| &mut v[..]).collect();
            f(&plan, &ins, &mut g);
            prop_assert!(
                got == expect,
                "kernel {} differs: k={} rows={} len={}",
                name,
                k,
                rows,
                len
            );
        }
        Ok(())
    }

    fn random_bytes(rng: &mut impl rand::Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.gen()).collect()
    }

    /// A coefficient generator: (rng, index in the row-major matrix) -> coefficient.
    type Pattern<'a> = dyn Fn(&mut rand::rngs::StdRng, usize) -> u8 + 'a;

    #[test]
    fn kernels_agree_over_lengths_and_coefficient_patterns() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let lengths = [
            0usize, 1, 2, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 95, 127, 128, 129, 255, 1000,
            4095, 4096, 4097, 8193,
        ];
        // (k, rows): single input/row, k = 1 fan-out to 255, one full group plus one, a
        // partial group, wide inputs (chunks of 64..128 bytes), and n = 256 shapes.
        let shapes = [
            (1, 1),
            (1, 255),
            (3, 7),
            (2, 1),
            (8, 9),
            (5, 16),
            (101, 155),
            (255, 1),
            (256, 2),
        ];
        for &(k, rows) in &shapes {
            for &len in &lengths {
                if k * rows * len > 2_000_000 {
                    continue;
                }
                let inputs: Vec<Vec<u8>> = (0..k).map(|_| random_bytes(&mut rng, len)).collect();
                let patterns: [&Pattern<'_>; 5] = [
                    &|r, _| r.gen(),
                    &|_, _| 0,
                    &|_, _| 1,
                    &|r, _| r.gen_range(0..2),
                    // column 0 all zero, column 1 all one, the rest general or 0/1
                    &|r, i| match i % k {
                        0 => 0,
                        1 => 1,
                        _ => [0, 1, r.gen(), r.gen()][r.gen_range(0..4)],
                    },
                ];
                for p in patterns {
                    let coeffs: Vec<u8> = (0..k * rows).map(|i| p(&mut rng, i)).collect();
                    check_kernels(&coeffs, &inputs).unwrap();
                }
            }
        }
    }

    /// Encodes with every kernel (parity must agree), then decodes from the last k shares —
    /// parity only when n - k >= k — with every kernel.
    #[test]
    fn encode_and_decode_all_shapes_with_every_kernel() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let shapes = [
            (1, 1),
            (1, 2),
            (1, 256),
            (2, 256),
            (3, 10),
            (16, 32),
            (71, 255),
            (101, 256),
            (128, 256),
            (255, 256),
            (256, 256),
        ];
        for &(k, n) in &shapes {
            // Matrix work is the slow part in debug builds: build the codec and decoder once and
            // swap only the kernel.
            let base = Codec::new(k, n).unwrap();
            let ids: Vec<usize> = (n - k..n).rev().collect();
            let base_dec = base.decoder(&ids).unwrap();
            for bl in [1usize, 33, 100] {
                let data = random_bytes(&mut rng, k * bl);
                let mut first: Option<Vec<Vec<u8>>> = None;
                for (name, f) in kernel::available() {
                    let codec = Codec {
                        kernel: f,
                        ..base.clone()
                    };
                    let shares = encode_all(&codec, &data);
                    match &first {
                        None => first = Some(shares.clone()),
                        Some(s) => {
                            assert!(s == &shares, "{name}: {k}-of-{n} bl={bl} parity differs")
                        }
                    }
                    let dec = Decoder {
                        kernel: f,
                        ..base_dec.clone()
                    };
                    let blocks: Vec<&[u8]> = ids.iter().map(|&i| &shares[i][..]).collect();
                    let mut out = vec![vec![0u8; bl]; k];
                    let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|v| &mut v[..]).collect();
                    dec.decode(&blocks, &mut outs).unwrap();
                    assert!(out.concat() == data, "{name}: {k}-of-{n} bl={bl} decode");
                }
            }
        }
    }

    #[test]
    fn encode_some_matches_full_encode() {
        let codec = Codec::new(3, 10).unwrap();
        let data: Vec<u8> = (0..3 * 77).map(|i| (i * 37 + 5) as u8).collect();
        let shares = encode_all(&codec, &data);
        let pieces: Vec<&[u8]> = data.chunks(77).collect();
        let ids = [9, 4, 7];
        let mut out = vec![vec![0u8; 77]; 3];
        let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|v| &mut v[..]).collect();
        codec.encode_some(&pieces, &ids, &mut outs).unwrap();
        for (o, &id) in out.iter().zip(&ids) {
            assert_eq!(o, &shares[id]);
        }
        assert_eq!(
            codec.encode_some(&pieces, &[2], &mut [&mut [0u8; 77][..]]),
            Err(CodecError::BadShareId(2))
        );
    }

    #[test]
    fn zfec_2_of_3_is_not_xor() {
        let c = Codec::new(2, 3).unwrap();
        let shares = encode_all(&c, &[1, 1]);
        assert_eq!(shares[2], vec![3 ^ 2]);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Codec::new(0, 1).is_err());
        assert!(Codec::new(4, 3).is_err());
        assert!(Codec::new(1, 257).is_err());
        assert!(Codec::new(256, 256).is_ok());
        let c = Codec::new(3, 10).unwrap();
        assert_eq!(
            c.decoder(&[1, 1, 2]).unwrap_err(),
            CodecError::DuplicateShareId(1)
        );
        assert_eq!(
            c.decoder(&[1, 10, 2]).unwrap_err(),
            CodecError::BadShareId(10)
        );
        assert!(c.decoder(&[1, 2]).is_err());
    }

    proptest! {
        #[test]
        fn decode_any_k_of_n(k in 1usize..12, extra in 0usize..12, bl in 0usize..70, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng, seq::SliceRandom};
            let n = k + extra;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<u8> = (0..k * bl).map(|_| rng.gen()).collect();
            let codec = Codec::new(k, n).unwrap();
            let shares = if bl == 0 { vec![vec![]; n] } else { encode_all(&codec, &data) };
            let mut ids: Vec<usize> = (0..n).collect();
            ids.shuffle(&mut rng);
            ids.truncate(k);
            let dec = codec.decoder(&ids).unwrap();
            let blocks: Vec<&[u8]> = ids.iter().map(|&i| &shares[i][..]).collect();
            let mut out = vec![vec![0u8; bl]; k];
            let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|v| &mut v[..]).collect();
            dec.decode(&blocks, &mut outs).unwrap();
            prop_assert_eq!(out.concat(), data.clone());
            // Appended after bytes already in the vector, which stay as they were.
            let mut appended = vec![0xA5u8; 3];
            dec.decode_append(&blocks, &mut appended).unwrap();
            prop_assert_eq!(&appended[..3], &[0xA5u8; 3][..]);
            prop_assert_eq!(&appended[3..], &data[..]);
        }

        #[test]
        fn every_kernel_matches_reference(k in 1usize..20, rows in 1usize..20, len in 0usize..300, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Bias toward 0 and 1 so the skip and XOR-only paths are exercised too.
            let coeffs: Vec<u8> = (0..k * rows)
                .map(|_| match rng.gen_range(0..4) { 0 => 0, 1 => 1, _ => rng.gen() })
                .collect();
            let inputs: Vec<Vec<u8>> = (0..k).map(|_| (0..len).map(|_| rng.gen()).collect()).collect();
            check_kernels(&coeffs, &inputs)?;
        }
    }
}
