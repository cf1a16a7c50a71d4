//! zfec's systematic encoding matrix and the decode matrices derived from it.
//!
//! zfec builds the n×k Vandermonde matrix over the evaluation points 0, 1, α, α², …, and multiplies
//! its rows k..n by the inverse of its top k×k block. The result is unique, so any correct
//! inversion gives zfec's parity bytes exactly.

use super::gf;

/// Row-major `rows × cols` matrix over GF(2^8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl Matrix {
    pub fn zero(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0; rows * cols],
        }
    }

    pub fn at(&self, r: usize, c: usize) -> u8 {
        self.data[r * self.cols + c]
    }

    pub fn set(&mut self, r: usize, c: usize, v: u8) {
        self.data[r * self.cols + c] = v;
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn mul(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.cols, other.rows);
        let mut out = Matrix::zero(self.rows, other.cols);
        for r in 0..self.rows {
            for c in 0..other.cols {
                let mut acc = 0u8;
                for i in 0..self.cols {
                    acc ^= gf::mul(self.at(r, i), other.at(i, c));
                }
                out.set(r, c, acc);
            }
        }
        out
    }

    /// Gauss-Jordan inverse of a square matrix; `None` if singular.
    pub fn invert(&self) -> Option<Matrix> {
        assert_eq!(self.rows, self.cols);
        let n = self.rows;
        let mut a = self.clone();
        let mut inv = Matrix::zero(n, n);
        for i in 0..n {
            inv.set(i, i, 1);
        }
        for col in 0..n {
            let pivot = (col..n).find(|&r| a.at(r, col) != 0)?;
            if pivot != col {
                for c in 0..n {
                    a.data.swap(pivot * n + c, col * n + c);
                    inv.data.swap(pivot * n + c, col * n + c);
                }
            }
            let f = gf::inv(a.at(col, col));
            for c in 0..n {
                a.set(col, c, gf::mul(a.at(col, c), f));
                inv.set(col, c, gf::mul(inv.at(col, c), f));
            }
            for r in 0..n {
                let m = a.at(r, col);
                if r != col && m != 0 {
                    for c in 0..n {
                        let av = a.at(r, c) ^ gf::mul(m, a.at(col, c));
                        a.set(r, c, av);
                        let iv = inv.at(r, c) ^ gf::mul(m, inv.at(col, c));
                        inv.set(r, c, iv);
                    }
                }
            }
        }
        Some(inv)
    }
}

/// zfec's n×k Vandermonde matrix: row 0 is `[1, 0, …]`, row r ≥ 1 is `[α^((r-1)c)]`.
fn vandermonde(k: usize, n: usize) -> Matrix {
    let mut v = Matrix::zero(n, k);
    v.set(0, 0, 1);
    for r in 1..n {
        for c in 0..k {
            v.set(r, c, gf::exp((r - 1) * c));
        }
    }
    v
}

/// The (n-k)×k parity rows of zfec's systematic encoding matrix.
pub fn parity_rows(k: usize, n: usize) -> Matrix {
    let v = vandermonde(k, n);
    let top = Matrix {
        rows: k,
        cols: k,
        data: v.data[..k * k].to_vec(),
    };
    let inv = top
        .invert()
        .expect("a Vandermonde matrix over distinct points is invertible");
    let bottom = Matrix {
        rows: n - k,
        cols: k,
        data: v.data[k * k..].to_vec(),
    };
    bottom.mul(&inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfec_parity_rows() {
        assert_eq!(parity_rows(2, 3).data, vec![3, 2]);
        assert_eq!(
            parity_rows(3, 5).data,
            vec![0x0f, 0x08, 0x06, 0x2d, 0x30, 0x1c]
        );
        let p = parity_rows(3, 10);
        let expect: [[u8; 3]; 7] = [
            [15, 8, 6],
            [45, 48, 28],
            [153, 224, 120],
            [11, 231, 237],
            [137, 59, 179],
            [70, 241, 182],
            [186, 217, 98],
        ];
        for (r, row) in expect.iter().enumerate() {
            assert_eq!(p.row(r), row);
        }
        assert_eq!(parity_rows(1, 4).data, vec![1, 1, 1]);
    }
}
