//! Immutable share container (`storage/immutable.py`, `immutable_schema.py`).
//!
//! ```text
//! 0x00 u32 version (1: cleartext lease secrets, 2: BLAKE2b-hashed; lafs writes 2)
//! 0x04 u32 share data length, saturated at 2^32-1 (informational only)
//! 0x08 u32 number of leases
//! 0x0c     share data: exactly `max_size` bytes (sparse until written)
//!          then num_leases × 72-byte lease records
//! ```
//! The data length of an existing container is derived, as Tahoe does, from the file size:
//! `len − 12 − 72·num_leases`. The first lease is written at creation, at `12 + max_size`.
//!
//! Invariants: reads are clamped to the data region; writes outside `[0, max_size)` are
//! refused; the lease count is updated only after the record it counts is written, so a torn
//! update loses at most the new lease.

use super::lease::{LeaseRecord, SecretStorage, IMMUTABLE_LEASE_LEN};
use super::{read_array, read_checked, ByteStore, ContainerError};

/// Header size.
pub const HEADER_LEN: u64 = 12;
const LEASE_LEN: u64 = IMMUTABLE_LEASE_LEN as u64;

/// Immutable container versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImmutableVersion {
    V1,
    V2,
}

impl ImmutableVersion {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(ImmutableVersion::V1),
            2 => Some(ImmutableVersion::V2),
            _ => None,
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            ImmutableVersion::V1 => 1,
            ImmutableVersion::V2 => 2,
        }
    }

    pub fn secret_storage(self) -> SecretStorage {
        match self {
            ImmutableVersion::V1 => SecretStorage::Cleartext,
            ImmutableVersion::V2 => SecretStorage::Blake2b,
        }
    }
}

/// The 12-byte header of a fresh container holding `max_size` data bytes and no leases yet.
pub fn encode_header(version: ImmutableVersion, max_size: u64, num_leases: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&version.as_u32().to_be_bytes());
    let saturated = u32::try_from(max_size).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&saturated.to_be_bytes());
    out[8..12].copy_from_slice(&num_leases.to_be_bytes());
    out
}

/// A parsed immutable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImmutableHeader {
    pub version: ImmutableVersion,
    pub data_length_field: u32,
    pub num_leases: u32,
}

/// Parses the first 12 bytes of an immutable container.
pub fn parse_header(bytes: &[u8]) -> Result<ImmutableHeader, ContainerError> {
    let h = bytes.get(..12).ok_or(ContainerError::Truncated {
        needed: HEADER_LEN,
        have: bytes.len() as u64,
    })?;
    let word = |i: usize| -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&h[i..i + 4]);
        u32::from_be_bytes(a)
    };
    let v = word(0);
    let version =
        ImmutableVersion::from_u32(v).ok_or(ContainerError::UnknownImmutableVersion(v))?;
    Ok(ImmutableHeader {
        version,
        data_length_field: word(4),
        num_leases: word(8),
    })
}

/// An immutable container over a byte store.
pub struct ImmutableShare<S> {
    store: S,
    version: ImmutableVersion,
    num_leases: u32,
    /// Start of the lease records = 12 + data length.
    lease_offset: u64,
    /// The allocation limit while uploading; `None` for a share opened for reading.
    max_size: Option<u64>,
}

impl<S: ByteStore> ImmutableShare<S> {
    /// Initialises an empty store as a new container of `max_size` data bytes, with `first`
    /// as its first lease (written at `12 + max_size`, leaving a hole for the data).
    pub fn create(
        mut store: S,
        version: ImmutableVersion,
        max_size: u64,
        first: &LeaseRecord,
    ) -> Result<Self, ContainerError> {
        let lease_offset = HEADER_LEN
            .checked_add(max_size)
            .ok_or(ContainerError::Corrupt("size overflow"))?;
        store.set_len(0)?;
        store.write_all_at(0, &encode_header(version, max_size, 0))?;
        let mut share = ImmutableShare {
            store,
            version,
            num_leases: 0,
            lease_offset,
            max_size: Some(max_size),
        };
        share.add_lease(first)?;
        Ok(share)
    }

    /// Opens an existing container, validating its header against the store length.
    pub fn open(store: S) -> Result<Self, ContainerError> {
        let header = parse_header(&read_array::<12, _>(&store, 0)?)?;
        let len = store.len()?;
        let leases = u64::from(header.num_leases) * LEASE_LEN;
        let lease_offset = len.checked_sub(leases).filter(|o| *o >= HEADER_LEN).ok_or(
            ContainerError::Truncated {
                needed: HEADER_LEN + leases,
                have: len,
            },
        )?;
        Ok(ImmutableShare {
            store,
            version: header.version,
            num_leases: header.num_leases,
            lease_offset,
            max_size: None,
        })
    }

    /// Opens an in-progress container whose allocation is known (after a restart of the
    /// writer object); writes are limited to `max_size`.
    pub fn open_for_writing(store: S, max_size: u64) -> Result<Self, ContainerError> {
        let mut share = Self::open(store)?;
        share.max_size = Some(max_size);
        Ok(share)
    }

    pub fn version(&self) -> ImmutableVersion {
        self.version
    }

    /// Length of the share data.
    pub fn data_len(&self) -> u64 {
        self.lease_offset - HEADER_LEN
    }

    /// Reads up to `len` data bytes at `offset`, clamped to the data region (a read starting
    /// at or past the end returns nothing), as Tahoe's `read_share_data`.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, ContainerError> {
        let avail = self.data_len().saturating_sub(offset);
        let n = len.min(avail);
        if n == 0 {
            return Ok(Vec::new());
        }
        read_checked(&self.store, HEADER_LEN + offset, n)
    }

    /// Writes share data; refuses anything past the allocated size.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ContainerError> {
        let max = self.max_size.unwrap_or_else(|| self.data_len());
        let len = data.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= max => {}
            _ => return Err(ContainerError::OutOfBounds { offset, len, max }),
        }
        self.store.write_all_at(HEADER_LEN + offset, data)?;
        Ok(())
    }

    /// All lease records, in order.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>, ContainerError> {
        // num_leases was validated against the store length in open(), so this is bounded.
        let raw = read_checked(
            &self.store,
            self.lease_offset,
            u64::from(self.num_leases) * LEASE_LEN,
        )?;
        Ok(raw
            .chunks_exact(IMMUTABLE_LEASE_LEN)
            .map(|c| {
                let mut a = [0u8; IMMUTABLE_LEASE_LEN];
                a.copy_from_slice(c);
                LeaseRecord::from_immutable_bytes(&a)
            })
            .collect())
    }

    fn write_lease_at(&mut self, index: u32, lease: &LeaseRecord) -> Result<(), ContainerError> {
        let off = self.lease_offset + u64::from(index) * LEASE_LEN;
        self.store.write_all_at(off, &lease.to_immutable_bytes())?;
        Ok(())
    }

    fn write_count(&mut self, n: u32) -> Result<(), ContainerError> {
        self.store.write_all_at(8, &n.to_be_bytes())?;
        self.num_leases = n;
        Ok(())
    }

    /// Appends a lease (record first, then the count).
    pub fn add_lease(&mut self, lease: &LeaseRecord) -> Result<(), ContainerError> {
        let n = self
            .num_leases
            .checked_add(1)
            .ok_or(ContainerError::Corrupt("lease count overflow"))?;
        self.write_lease_at(self.num_leases, lease)?;
        self.write_count(n)
    }

    /// Renews the first lease whose renew secret matches, moving its expiration forward only
    /// (never backwards). Returns whether a lease matched.
    pub fn renew_lease(
        &mut self,
        renew_secret: &[u8; 32],
        new_expiration: u32,
    ) -> Result<bool, ContainerError> {
        let storage = self.version.secret_storage();
        for (i, mut lease) in self.leases()?.into_iter().enumerate() {
            if lease.renew_matches(storage, renew_secret) {
                if new_expiration > lease.expiration {
                    lease.expiration = new_expiration;
                    // i < num_leases ≤ u32::MAX.
                    self.write_lease_at(i as u32, &lease)?;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Tahoe's `add_or_renew_lease`: renew a lease with the same renew secret, else append.
    pub fn add_or_renew_lease(
        &mut self,
        owner_num: u32,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        expiration: u32,
    ) -> Result<(), ContainerError> {
        if !self.renew_lease(renew_secret, expiration)? {
            let storage = self.version.secret_storage();
            let lease = LeaseRecord::new(
                storage,
                owner_num,
                renew_secret,
                cancel_secret,
                expiration,
                [0; 20],
            );
            self.add_lease(&lease)?;
        }
        Ok(())
    }

    /// Keeps only the leases for which `keep` is true, packing them in their original order
    /// and truncating the store. Returns the number kept (0 means the caller should delete the
    /// share, as Tahoe's `cancel_lease` does).
    pub fn retain_leases(
        &mut self,
        mut keep: impl FnMut(&LeaseRecord) -> bool,
    ) -> Result<u32, ContainerError> {
        let leases = self.leases()?;
        let kept: Vec<LeaseRecord> = leases.into_iter().filter(|l| keep(l)).collect();
        // kept.len() ≤ num_leases, a u32.
        let n = kept.len() as u32;
        if n == self.num_leases {
            return Ok(n);
        }
        for (i, lease) in kept.iter().enumerate() {
            self.write_lease_at(i as u32, lease)?;
        }
        self.write_count(n)?;
        self.store
            .set_len(self.lease_offset + u64::from(n) * LEASE_LEN)?;
        Ok(n)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }
}
