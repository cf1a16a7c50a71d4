//! Mutable-file keys: the RSA signing key pair, the symmetric keys derived from it, and a pool of
//! pre-generated key pairs.
//!
//! Invariants (digest §4.1, §10 items 5-6):
//! - the private key is held as the **exact PKCS#8 DER bytes** it was created or decrypted as;
//!   the writekey hashes those bytes and a publish re-encrypts those bytes, so they are never
//!   re-encoded (a re-encoding could differ and would change the writekey);
//! - the public key is the SubjectPublicKeyInfo DER; the fingerprint hashes it;
//! - signatures are RSA-PSS with SHA-256, MGF1-SHA-256 and a salt of exactly 32 bytes, in both
//!   directions (the `rsa` crate's `new_with_salt_len(_, 32)`; its verifier checks the salt
//!   length exactly, so signatures with another salt length are rejected, as in Tahoe);
//! - a private key that is not 2048 bits is refused (Tahoe's
//!   `create_signing_keypair_from_string`); public keys of any size and exponent verify (old
//!   shares carry e=17 keys).
//!
//! Key material never appears in `Debug` output or error messages.

use crate::cap::{MutableFormat, MutableReadCap, MutableVerifierCap, MutableWriteCap};
use crate::crypto::hash::{self, Hash};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use thiserror::Error;

/// The modulus size Tahoe creates and accepts for private keys.
pub const KEY_BITS: usize = 2048;
/// The PSS salt length Tahoe signs and verifies with.
pub const PSS_SALT_LEN: usize = 32;
/// The length of a signature by a 2048-bit key.
pub const SIGNATURE_LEN: usize = 256;

/// Key errors. None of them carries key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("mutable key: the private key is not valid PKCS#8 DER for RSA")]
    BadPrivateKey,
    #[error("mutable key: the private key has {0} bits; only 2048-bit keys are accepted")]
    WrongKeySize(usize),
    #[error("mutable key: the public key is not valid SubjectPublicKeyInfo DER for RSA")]
    BadPublicKey,
    #[error("mutable key: RSA key generation failed")]
    Generation,
    #[error("mutable key: signing failed")]
    Signing,
    #[error("mutable key: signature does not verify")]
    BadSignature,
}

/// An RSA-2048 signing key pair with the exact DER encodings Tahoe hashes.
#[derive(Clone)]
pub struct SigningKeyPair {
    pkcs8_der: Vec<u8>,
    spki_der: Vec<u8>,
    key: RsaPrivateKey,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKeyPair(..)")
    }
}

impl SigningKeyPair {
    /// Generates a fresh RSA-2048 key pair with e = 65537.
    pub fn generate() -> Result<Self, KeyError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, KEY_BITS)
            .map_err(|_| KeyError::Generation)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Generation)?;
        Self::from_pkcs8_der(der.as_bytes().to_vec())
    }

    /// Loads a PKCS#8 DER private key, keeping `der` verbatim. Keys that are not 2048 bits are
    /// refused.
    pub fn from_pkcs8_der(der: Vec<u8>) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| KeyError::BadPrivateKey)?;
        let bits = key.n().bits();
        if bits != KEY_BITS {
            return Err(KeyError::WrongKeySize(bits));
        }
        let spki_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|_| KeyError::BadPrivateKey)?
            .as_bytes()
            .to_vec();
        Ok(SigningKeyPair {
            pkcs8_der: der,
            spki_der,
            key,
        })
    }

    /// The exact PKCS#8 DER bytes (a secret).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The SubjectPublicKeyInfo DER of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The keys of the mutable file this key pair controls.
    pub fn file_keys(&self) -> WriterKeys {
        WriterKeys::from_writekey(
            hash::ssk_writekey_hash(&self.pkcs8_der),
            hash::ssk_pubkey_fingerprint_hash(&self.spki_der),
        )
    }

    /// An RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signer =
            rsa::pss::SigningKey::<Sha256>::new_with_salt_len(self.key.clone(), PSS_SALT_LEN);
        let sig = signer
            .try_sign_with_rng(&mut rand::rngs::OsRng, msg)
            .map_err(|_| KeyError::Signing)?;
        Ok(sig.to_vec())
    }
}

/// Verifies an RSA-PSS (SHA-256, MGF1-SHA-256, salt exactly 32) signature with a public key given
/// as SubjectPublicKeyInfo DER. Any modulus size and exponent is accepted.
pub fn verify_signature(spki_der: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let public = RsaPublicKey::from_public_key_der(spki_der).map_err(|_| KeyError::BadPublicKey)?;
    let verifier = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(public, PSS_SALT_LEN);
    let sig = rsa::pss::Signature::try_from(signature).map_err(|_| KeyError::BadSignature)?;
    verifier
        .verify(msg, &sig)
        .map_err(|_| KeyError::BadSignature)
}

/// The symmetric keys of a mutable file as seen by a reader: readkey, storage index and
/// fingerprint (digest §1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct ReaderKeys {
    pub readkey: [u8; 16],
    pub storage_index: [u8; 16],
    pub fingerprint: Hash,
}

impl fmt::Debug for ReaderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReaderKeys(si={})",
            crate::util::base32::encode(&self.storage_index)
        )
    }
}

impl ReaderKeys {
    pub fn from_readkey(readkey: [u8; 16], fingerprint: Hash) -> Self {
        ReaderKeys {
            readkey,
            storage_index: hash::ssk_storage_index_hash(&readkey),
            fingerprint,
        }
    }

    pub fn from_cap(cap: &MutableReadCap) -> Self {
        Self::from_readkey(cap.readkey, cap.fingerprint)
    }

    pub fn read_cap(&self, format: MutableFormat) -> MutableReadCap {
        MutableReadCap {
            format,
            readkey: self.readkey,
            fingerprint: self.fingerprint,
        }
    }

    pub fn verifier_cap(&self, format: MutableFormat) -> MutableVerifierCap {
        MutableVerifierCap {
            format,
            storage_index: self.storage_index,
            fingerprint: self.fingerprint,
        }
    }

    /// The AES key for data encrypted under `salt` (SDMF: the IV; MDMF: a segment salt).
    pub fn data_key(&self, salt: &[u8; 16]) -> [u8; 16] {
        hash::ssk_readkey_data_hash(salt, &self.readkey)
    }
}

/// The symmetric keys of a mutable file as seen by a writer.
#[derive(Clone, PartialEq, Eq)]
pub struct WriterKeys {
    pub writekey: [u8; 16],
    pub reader: ReaderKeys,
    pub write_enabler_master: Hash,
}

impl fmt::Debug for WriterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterKeys({:?})", self.reader)
    }
}

impl WriterKeys {
    pub fn from_writekey(writekey: [u8; 16], fingerprint: Hash) -> Self {
        WriterKeys {
            writekey,
            reader: ReaderKeys::from_readkey(hash::ssk_readkey_hash(&writekey), fingerprint),
            write_enabler_master: hash::ssk_write_enabler_master_hash(&writekey),
        }
    }

    pub fn from_cap(cap: &MutableWriteCap) -> Self {
        Self::from_writekey(cap.writekey, cap.fingerprint)
    }

    pub fn write_cap(&self, format: MutableFormat) -> MutableWriteCap {
        MutableWriteCap {
            format,
            writekey: self.writekey,
            fingerprint: self.reader.fingerprint,
        }
    }

    /// The write enabler for the server whose 20-byte node id (Foolscap TubID) is `nodeid`.
    pub fn write_enabler(&self, nodeid: &[u8; 20]) -> Hash {
        hash::ssk_write_enabler_hash(&self.write_enabler_master, nodeid)
    }

    /// `AES-CTR(writekey)(pkcs8_der)`: the private key as stored in every share.
    pub fn encrypt_private_key(&self, pkcs8_der: &[u8]) -> Vec<u8> {
        let mut out = pkcs8_der.to_vec();
        crate::crypto::aes::ctr_in_place(&self.writekey, &mut out);
        out
    }

    /// Decrypts a share's encrypted private key and checks that it hashes to the writekey (over
    /// the raw bytes, which are then kept verbatim).
    pub fn decrypt_private_key(&self, enc: &[u8]) -> Result<SigningKeyPair, KeyError> {
        let mut der = enc.to_vec();
        crate::crypto::aes::ctr_in_place(&self.writekey, &mut der);
        if hash::ssk_writekey_hash(&der) != self.writekey {
            return Err(KeyError::BadPrivateKey);
        }
        let pair = SigningKeyPair::from_pkcs8_der(der)?;
        if hash::ssk_pubkey_fingerprint_hash(pair.spki_der()) != self.reader.fingerprint {
            return Err(KeyError::BadPrivateKey);
        }
        Ok(pair)
    }
}

struct PoolState {
    keys: VecDeque<SigningKeyPair>,
    /// Keys announced as needed soon ([`KeyPool::want`]) and not yet taken.
    demand: usize,
    shutdown: bool,
}

impl PoolState {
    /// How many keys the filler keeps ready: `capacity`, or up to `ahead` while more are wanted.
    fn target(&self, capacity: usize, ahead: usize) -> usize {
        capacity.max(self.demand.min(ahead))
    }
}

struct PoolShared {
    state: Mutex<PoolState>,
    /// Signalled when a key is taken or wanted (the filler may need to refill) or on shutdown.
    wake: Condvar,
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bounded pool of pre-generated key pairs, refilled by background threads, so that creating
/// a mutable file or directory does not wait for RSA key generation (hundreds of milliseconds).
///
/// The filler thread runs at the lowest priority (nice 19 on Linux): keys made ahead use only
/// CPU nobody else wants. It keeps `capacity` keys ready, and up to `ahead` while callers have
/// announced more ([`KeyPool::want`]) than are ready, so a burst of directories announced at
/// local speed (write-back `mkdir`) finds its keys generated meanwhile. With the pool drained,
/// [`KeyPool::take`] generates inline at its caller's priority, so a drained pool with work
/// waiting has two generators or more (a busy machine cannot starve a waiting creation, as it
/// can starve the idle filler: under a load average of 20, a variant with a single
/// normal-priority helper thread took 90 s to flush 50 new directories).
///
/// Invariants: the pool holds at most `max(capacity, ahead)` keys; `take` never waits for the
/// filler; generating never holds the lock.
pub struct KeyPool {
    shared: Arc<PoolShared>,
    filler: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPool(ready={})", self.ready())
    }
}

impl KeyPool {
    /// Starts a pool that keeps up to `capacity` keys ready (0: no background thread; every
    /// `take` generates inline).
    pub fn new(capacity: usize) -> Self {
        Self::with_ahead(capacity, capacity)
    }

    /// A pool that keeps `capacity` keys ready, and up to `ahead` while more are wanted
    /// ([`KeyPool::want`]). Both 0: no background thread.
    pub fn with_ahead(capacity: usize, ahead: usize) -> Self {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                keys: VecDeque::new(),
                demand: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let filler = if capacity.max(ahead) > 0 {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lafs-keypool".into())
                .spawn(move || {
                    idle_priority();
                    Self::fill(&s, capacity, ahead)
                })
                .ok()
        } else {
            None
        };
        KeyPool { shared, filler }
    }

    /// Announces `n` more keys to be taken soon: the filler generates ahead for them (up to
    /// `ahead` keys ready). Never blocks on key generation.
    pub fn want(&self, n: usize) {
        {
            let mut st = self.shared.lock();
            st.demand = st.demand.saturating_add(n);
        }
        self.shared.wake.notify_all();
    }

    fn fill(shared: &PoolShared, capacity: usize, ahead: usize) {
        loop {
            {
                let mut st = shared.lock();
                while !st.shutdown && st.keys.len() >= st.target(capacity, ahead) {
                    st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.shutdown {
                    return;
                }
            }
            // Generate without holding the lock, so `take` is never blocked by RSA.
            let Ok(pair) = SigningKeyPair::generate() else {
                return;
            };
            let mut st = shared.lock();
            if st.shutdown {
                return;
            }
            if st.keys.len() < st.target(capacity, ahead) {
                st.keys.push_back(pair);
            }
        }
    }

    /// The number of keys ready now.
    pub fn ready(&self) -> usize {
        self.shared.lock().keys.len()
    }

    /// A fresh key pair: from the pool if one is ready, otherwise generated inline (blocking:
    /// call it off async workers).
    pub fn take(&self) -> Result<SigningKeyPair, KeyError> {
        let pooled = {
            let mut st = self.shared.lock();
            st.demand = st.demand.saturating_sub(1);
            st.keys.pop_front()
        };
        self.shared.wake.notify_all();
        match pooled {
            Some(k) => Ok(k),
            None => SigningKeyPair::generate(),
        }
    }
}

/// Lowers the calling thread to the lowest priority (nice 19). Linux only: there `setpriority` on
/// a thread id changes that thread alone (elsewhere it would change the whole process, so it is
/// left alone). Best effort: a failure leaves the normal priority.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers and change only this thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        if let Ok(tid) = libc::id_t::try_from(tid) {
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        // The filler may be inside a key generation; detach rather than wait for it.
        drop(self.filler.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_write_enabler_vector() {
        // §2: Tahoe's ssk_write_enabler_hash(writekey=b"wk", 0x00*20) hashes the master of the
        // writekey with the node id -> fuu2dvx7...
        let wem = hash::ssk_write_enabler_master_hash(b"wk");
        assert_eq!(
            crate::util::base32::encode(&hash::ssk_write_enabler_hash(&wem, &[0u8; 20])),
            "fuu2dvx7g6gqu5x22vfhtyed7p4pd47y5hgxbqzgrlyvxoev62tq"
        );
    }

    #[test]
    fn mdmf_diminish_from_digest() {
        // §1.3: writekey 0x01*16 -> readkey nvgh5vj2..., SI nt4fwemu...
        let w = WriterKeys::from_writekey([1; 16], [2; 32]);
        assert_eq!(
            crate::util::base32::encode(&w.reader.readkey),
            "nvgh5vj2ekzzkim5fgtb4gey5y"
        );
        assert_eq!(
            crate::util::base32::encode(&w.reader.storage_index),
            "nt4fwemuw7flestsezvo2eveke"
        );
        assert!(!format!("{w:?}").contains("aeaqcaib"));
    }

    #[test]
    fn wrong_size_private_key_is_refused() {
        let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let der = small.to_pkcs8_der().unwrap().as_bytes().to_vec();
        assert_eq!(
            SigningKeyPair::from_pkcs8_der(der).unwrap_err(),
            KeyError::WrongKeySize(1024)
        );
        assert_eq!(
            SigningKeyPair::from_pkcs8_der(b"junk".to_vec()).unwrap_err(),
            KeyError::BadPrivateKey
        );
        // Public keys of other sizes verify fine.
        let pk = small.to_public_key();
        let signer = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(small, 32);
        let sig = signer.sign_with_rng(&mut rand::rngs::OsRng, b"m").to_vec();
        let spki = pk.to_public_key_der().unwrap();
        verify_signature(spki.as_bytes(), b"m", &sig).unwrap();
    }

    #[test]
    fn pool_generates_ahead_for_announced_keys_within_its_bound() {
        let mut st = PoolState {
            keys: VecDeque::new(),
            demand: 0,
            shutdown: false,
        };
        assert_eq!(st.target(8, 64), 8, "idle: the base capacity");
        st.demand = 20;
        assert_eq!(st.target(8, 64), 20, "a burst announced: one key each");
        st.demand = 500;
        assert_eq!(st.target(8, 64), 64, "bounded");
        st.demand = 3;
        assert_eq!(st.target(8, 64), 8);
        let pool = KeyPool::with_ahead(0, 0);
        pool.want(2);
        assert_eq!(pool.shared.lock().demand, 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn filler_thread_runs_at_idle_priority() {
        // The nice value of each thread: field 19 of /proc/self/task/<tid>/stat (index 16 after
        // the parenthesised command name).
        fn nice_of(stat: &str) -> Option<i64> {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(16)?.parse().ok()
        }
        let own = std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|s| nice_of(&s));
        if own == Some(19) {
            eprintln!("the test already runs at nice 19: nothing to compare");
            return;
        }
        let pool = KeyPool::new(1);
        let mut seen = false;
        for _ in 0..200 {
            for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if comm.trim() == "lafs-keypool" {
                    let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                    seen |= nice_of(&stat) == Some(19);
                }
            }
            if seen {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(pool);
        assert!(seen, "the filler thread runs at nice 19");
    }
}
