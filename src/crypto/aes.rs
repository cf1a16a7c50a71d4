//! AES-128-CTR as Tahoe uses it: the initial counter block is sixteen zero bytes and the whole
//! block is one big-endian 128-bit counter. Tahoe never uses an IV; each use derives a fresh key.
//!
//! [`AesCtr`] is a keystream positioned anywhere in the stream, so a byte range of a file is
//! decrypted without touching what precedes it.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

type Ctr = ctr::Ctr128BE<aes::Aes128>;

/// An AES-128-CTR keystream with Tahoe's zero IV.
pub struct AesCtr(Ctr);

impl AesCtr {
    /// A keystream at offset 0.
    pub fn new(key: &[u8; 16]) -> Self {
        AesCtr(Ctr::new(key.into(), &[0u8; 16].into()))
    }

    /// A keystream positioned at byte `offset` of the stream.
    pub fn at(key: &[u8; 16], offset: u64) -> Self {
        let mut c = Self::new(key);
        c.0.seek(offset);
        c
    }

    /// XORs the keystream into `data` in place and advances.
    pub fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

/// Encrypts or decrypts `data` in place, from the start of the stream.
pub fn ctr_in_place(key: &[u8; 16], data: &mut [u8]) {
    AesCtr::new(key).apply(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nist_sp800_38a_f5_1_first_block_with_zero_counter() {
        // AES-128 of the all-zero block under the SP 800-38A key gives the first keystream block.
        use aes::cipher::{BlockEncrypt, KeyInit};
        let key = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let mut block = aes::Block::default();
        aes::Aes128::new(&key.into()).encrypt_block(&mut block);
        let mut ks = [0u8; 16];
        AesCtr::new(&key).apply(&mut ks);
        assert_eq!(&ks[..], &block[..]);
        // The second block uses counter 1.
        let mut ks2 = [0u8; 32];
        AesCtr::new(&key).apply(&mut ks2);
        let mut one = aes::Block::default();
        one[15] = 1;
        aes::Aes128::new(&key.into()).encrypt_block(&mut one);
        assert_eq!(&ks2[16..], &one[..]);
    }

    #[test]
    fn seek_matches_stream() {
        let key = [7u8; 16];
        let mut whole = vec![0u8; 1000];
        ctr_in_place(&key, &mut whole);
        for off in [0usize, 1, 15, 16, 17, 500, 999] {
            let mut part = vec![0u8; 1000 - off];
            AesCtr::at(&key, off as u64).apply(&mut part);
            assert_eq!(&part[..], &whole[off..]);
        }
    }
}
