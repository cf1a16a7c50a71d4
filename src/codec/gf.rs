//! GF(2^8) with zfec's field polynomial x^8+x^4+x^3+x^2+1 (0x11D) and generator 2.

use std::sync::OnceLock;

pub struct Tables {
    pub exp: [u8; 510],
    pub log: [u8; 256],
    /// `mul[a][b] = a·b`; 64 KiB, used by the scalar kernel and to build SIMD nibble tables.
    pub mul: Vec<[u8; 256]>,
    pub inv: [u8; 256],
}

pub fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut exp = [0u8; 510];
        let mut log = [0u8; 256];
        let mut x: u16 = 1;
        for (i, e) in exp.iter_mut().enumerate().take(255) {
            *e = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11D;
            }
        }
        for i in 255..510 {
            exp[i] = exp[i - 255];
        }
        let mut mul = vec![[0u8; 256]; 256];
        for a in 1..256usize {
            for b in 1..256usize {
                mul[a][b] = exp[log[a] as usize + log[b] as usize];
            }
        }
        let mut inv = [0u8; 256];
        for a in 1..256usize {
            inv[a] = exp[255 - log[a] as usize];
        }
        Tables { exp, log, mul, inv }
    })
}

pub fn mul(a: u8, b: u8) -> u8 {
    tables().mul[a as usize][b as usize]
}

pub fn inv(a: u8) -> u8 {
    debug_assert!(a != 0);
    tables().inv[a as usize]
}

/// α^e for the generator α = 2.
pub fn exp(e: usize) -> u8 {
    tables().exp[e % 255]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_facts() {
        let t = tables();
        assert_eq!(
            &t.exp[..12],
            &[1, 2, 4, 8, 16, 32, 64, 128, 0x1d, 0x3a, 0x74, 0xe8]
        );
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
        assert_eq!(mul(3, 7), 9);
    }
}
