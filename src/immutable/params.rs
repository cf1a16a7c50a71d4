//! Encoding parameters and the geometry they imply for one file (digest §3.1).
//!
//! Invariants of a [`Geometry`] (checked by its constructors, relied on everywhere else):
//! `1 ≤ k ≤ n ≤ 256`, `size ≥ 1`, `segment_size ≥ 1` and a multiple of `k`,
//! `num_segments = ceil(size / segment_size) ≥ 1`, the tail holds `1..=segment_size` bytes and is
//! zero-padded to a multiple of `k`, and `share_size = ceil(size / k)` equals the sum of the block
//! lengths of all segments. All arithmetic is in `u64` and cannot overflow for any `size < 2^63`.

use super::ImmutableError;

/// Files of at most this many bytes become LIT caps (`URI_LIT_SIZE_THRESHOLD`, compared with `<=`).
pub const LIT_THRESHOLD: u64 = 55;

/// Tahoe 1.20's `DEFAULT_IMMUTABLE_MAX_SEGMENT_SIZE` (1 MiB).
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 1024 * 1024;

/// The largest share count CHK allows.
pub const MAX_SHARES: usize = 256;

/// How a file is to be encoded: `needed`-of-`total` shares, placement needs `happy` servers (the
/// encoder itself ignores `happy`; it is carried for the uploader), segments of at most
/// `max_segment_size` bytes before rounding up to a multiple of `needed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodingParams {
    pub needed: usize,
    pub happy: usize,
    pub total: usize,
    pub max_segment_size: u64,
}

impl Default for EncodingParams {
    /// Tahoe's defaults: 3-of-10, happy 7, 1 MiB segments.
    fn default() -> Self {
        EncodingParams {
            needed: 3,
            happy: 7,
            total: 10,
            max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
        }
    }
}

impl EncodingParams {
    /// `needed`-of-`total` with `happy = total` and the default segment size.
    pub fn new(needed: usize, total: usize) -> Self {
        EncodingParams {
            needed,
            happy: total,
            total,
            max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
        }
    }

    /// Checks `1 ≤ needed ≤ total ≤ 256`, `1 ≤ happy ≤ total` and `max_segment_size ≥ 1`.
    pub fn validate(&self) -> Result<(), ImmutableError> {
        check_kn(self.needed, self.total)?;
        if self.happy == 0 || self.happy > self.total {
            return Err(ImmutableError::BadParameters(
                "happy must be between 1 and total",
            ));
        }
        if self.max_segment_size == 0 {
            return Err(ImmutableError::BadParameters(
                "max segment size must be at least 1",
            ));
        }
        Ok(())
    }
}

fn check_kn(k: usize, n: usize) -> Result<(), ImmutableError> {
    if k == 0 || k > n || n > MAX_SHARES {
        return Err(ImmutableError::BadParameters(
            "shares must satisfy 1 <= needed <= total <= 256",
        ));
    }
    Ok(())
}

/// `ceil(x / k) * k`.
pub fn next_multiple(x: u64, k: u64) -> u64 {
    x.div_ceil(k) * k
}

/// The derived layout of one CHK file's segments and blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub size: u64,
    pub needed: usize,
    pub total: usize,
    /// The segment size after rounding up to a multiple of `needed`.
    pub segment_size: u64,
    pub num_segments: u64,
    /// Plaintext bytes in the last segment (`1..=segment_size`).
    pub tail_size: u64,
    /// `tail_size` rounded up to a multiple of `needed`.
    pub padded_tail: u64,
    /// `segment_size / needed`: the length of every block except the tail's.
    pub block_size: u64,
    /// `padded_tail / needed`.
    pub tail_block_size: u64,
    /// `ceil(size / needed)`: the data bytes of each share.
    pub share_size: u64,
}

impl Geometry {
    /// The geometry the uploader chooses: `segment_size = next_multiple(min(max, size), k)`.
    pub fn new(size: u64, params: &EncodingParams) -> Result<Self, ImmutableError> {
        params.validate()?;
        if size == 0 {
            return Err(ImmutableError::BadParameters(
                "a CHK file has at least one byte",
            ));
        }
        let k = params.needed as u64;
        let segment_size = next_multiple(params.max_segment_size.min(size), k);
        Self::with_segment_size(size, params.needed, params.total, segment_size)
    }

    /// The geometry for a known segment size (a reader takes it from the UEB).
    pub fn with_segment_size(
        size: u64,
        needed: usize,
        total: usize,
        segment_size: u64,
    ) -> Result<Self, ImmutableError> {
        check_kn(needed, total)?;
        let k = needed as u64;
        if size == 0 || size >= 1 << 63 {
            return Err(ImmutableError::BadParameters("file size out of range"));
        }
        if segment_size == 0 || !segment_size.is_multiple_of(k) {
            return Err(ImmutableError::BadParameters(
                "segment size must be a positive multiple of needed",
            ));
        }
        let num_segments = size.div_ceil(segment_size);
        let tail_size = match size % segment_size {
            0 => segment_size,
            t => t,
        };
        let padded_tail = next_multiple(tail_size, k);
        Ok(Geometry {
            size,
            needed,
            total,
            segment_size,
            num_segments,
            tail_size,
            padded_tail,
            block_size: segment_size / k,
            tail_block_size: padded_tail / k,
            share_size: size.div_ceil(k),
        })
    }

    /// Plaintext offset of segment `seg`.
    pub fn segment_offset(&self, seg: u64) -> u64 {
        seg * self.segment_size
    }

    /// Unpadded plaintext length of segment `seg` (`seg < num_segments`).
    pub fn segment_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_size
        } else {
            self.segment_size
        }
    }

    /// Block length of segment `seg` in every share.
    pub fn block_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_block_size
        } else {
            self.block_size
        }
    }

    /// Offset of segment `seg`'s block within the share's data region.
    pub fn block_offset(&self, seg: u64) -> u64 {
        seg * self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(size: u64, k: usize, max: u64) -> Geometry {
        let p = EncodingParams {
            needed: k,
            happy: k,
            total: k.max(3).max(k),
            max_segment_size: max,
        };
        Geometry::new(size, &p).unwrap()
    }

    /// The table of digest §9 (segsize / number of segments / padded tail).
    #[test]
    fn digest_table() {
        /// (segment size, segments, padded tail) for k = 1, 2, 3, 71, 101.
        type Row = [(u64, u64, u64); 5];
        let table: &[(u64, Row)] = &[
            (
                131071,
                [
                    (131071, 1, 131071),
                    (131072, 1, 131072),
                    (131073, 1, 131073),
                    (131137, 1, 131137),
                    (131098, 1, 131098),
                ],
            ),
            (
                131073,
                [
                    (131072, 2, 1),
                    (131072, 2, 2),
                    (131073, 1, 131073),
                    (131137, 1, 131137),
                    (131098, 1, 131098),
                ],
            ),
            (
                2097151,
                [
                    (131072, 16, 131071),
                    (131072, 16, 131072),
                    (131073, 16, 131058),
                    (131137, 16, 130143),
                    (131098, 16, 130694),
                ],
            ),
            (
                2097153,
                [
                    (131072, 17, 1),
                    (131072, 17, 2),
                    (131073, 16, 131058),
                    (131137, 16, 130143),
                    (131098, 16, 130694),
                ],
            ),
            (
                4194304,
                [
                    (131072, 32, 131072),
                    (131072, 32, 131072),
                    (131073, 32, 131043),
                    (131137, 32, 129078),
                    (131098, 32, 130290),
                ],
            ),
            (
                8388607,
                [
                    (131072, 64, 131071),
                    (131072, 64, 131072),
                    (131073, 64, 131010),
                    (131137, 64, 127019),
                    (131098, 64, 129482),
                ],
            ),
            (
                8388609,
                [
                    (131072, 65, 1),
                    (131072, 65, 2),
                    (131073, 64, 131010),
                    (131137, 64, 127019),
                    (131098, 64, 129482),
                ],
            ),
        ];
        for (size, row) in table {
            for (k, want) in [1usize, 2, 3, 71, 101].iter().zip(row) {
                let g = Geometry::new(
                    *size,
                    &EncodingParams {
                        needed: *k,
                        happy: *k,
                        total: 256,
                        max_segment_size: 131072,
                    },
                )
                .unwrap();
                assert_eq!(
                    (g.segment_size, g.num_segments, g.padded_tail),
                    *want,
                    "size {size} k {k}"
                );
                let sum: u64 = (0..g.num_segments).map(|s| g.block_len(s)).sum();
                assert_eq!(sum, g.share_size);
            }
        }
    }

    #[test]
    fn small_and_rejects() {
        let g = geom(56, 3, 131072);
        assert_eq!(
            (g.segment_size, g.num_segments, g.padded_tail, g.share_size),
            (57, 1, 57, 19)
        );
        assert!(Geometry::new(0, &EncodingParams::default()).is_err());
        assert!(EncodingParams::new(0, 1).validate().is_err());
        assert!(EncodingParams::new(4, 3).validate().is_err());
        assert!(EncodingParams::new(1, 257).validate().is_err());
        assert!(Geometry::with_segment_size(100, 3, 10, 50).is_err());
        assert!(Geometry::with_segment_size(100, 3, 10, 0).is_err());
    }
}
