//! Mutable share container (`storage/mutable.py`, `mutable_schema.py`).
//!
//! ```text
//! 0    32  magic (v1 or v2, below)
//! 32   20  write-enabler nodeid (the server's TubID)
//! 52   32  write enabler
//! 84   8   data length
//! 92   8   extra-lease offset X (= 468 + data capacity)
//! 100  368 4 lease slots × 92 bytes (owner 0 = empty)
//! 468  …   share data
//! X    4   count of extra leases, then count × 92-byte leases
//! ```
//! A fresh container is 472 bytes. Growth rule (Tahoe's `_write_share_data`): a write ending
//! at or past the data length extends it; if it ends past X, the extra-lease block is copied
//! to `468 + new end` and its old bytes are zeroed; a hole between the old data length and the
//! write is zero-filled. `new_length` only ever lowers the data length: the container never
//! shrinks.
//!
//! Invariants checked on open (an untrusted file never makes us index out of range):
//! `468 + data_length ≤ X` and `X + 4 + 92·count ≤ store length`.

use super::lease::{LeaseRecord, SecretStorage, MUTABLE_LEASE_LEN};
use super::{read_array, read_checked, ByteStore, ContainerError};
use crate::storage::{ct_eq, NodeId, MAX_MUTABLE_SHARE_SIZE};

/// Version 1 magic.
pub const MAGIC_V1: [u8; 32] = *b"Tahoe mutable container v1\n\x75\x09\x44\x03\x8e";
/// Version 2 magic: the text, then `tagged_hash("allmydata_mutable_container_header", text)[:5]`.
pub const MAGIC_V2: [u8; 32] = *b"Tahoe mutable container v2\n\xc3\x55\x21\x99\x25";
/// Fixed header size (without lease slots).
pub const HEADER_LEN: u64 = 100;
const LEASE_LEN: u64 = MUTABLE_LEASE_LEN as u64;
/// Number of lease slots in the header.
pub const HEADER_LEASE_SLOTS: u32 = 4;
/// Offset of the share data.
pub const DATA_OFFSET: u64 = HEADER_LEN + 4 * LEASE_LEN;
/// Size of a fresh container.
pub const FRESH_LEN: u64 = DATA_OFFSET + 4;

const DATA_LENGTH_AT: u64 = 84;
const EXTRA_LEASE_OFFSET_AT: u64 = 92;
/// Zero-fill is written in chunks of this size so a large hole never needs a large buffer.
const ZERO_CHUNK: usize = 64 * 1024;

/// Mutable container versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutableVersion {
    V1,
    V2,
}

impl MutableVersion {
    /// Recognises a magic at the start of `prefix`.
    pub fn from_magic(prefix: &[u8]) -> Option<Self> {
        let m = prefix.get(..32)?;
        if m == MAGIC_V2 {
            Some(MutableVersion::V2)
        } else if m == MAGIC_V1 {
            Some(MutableVersion::V1)
        } else {
            None
        }
    }

    pub fn magic(self) -> &'static [u8; 32] {
        match self {
            MutableVersion::V1 => &MAGIC_V1,
            MutableVersion::V2 => &MAGIC_V2,
        }
    }

    pub fn secret_storage(self) -> SecretStorage {
        match self {
            MutableVersion::V1 => SecretStorage::Cleartext,
            MutableVersion::V2 => SecretStorage::Blake2b,
        }
    }
}

/// A parsed mutable header.
#[derive(Clone, PartialEq, Eq)]
pub struct MutableHeader {
    pub version: MutableVersion,
    pub write_enabler_nodeid: NodeId,
    pub write_enabler: [u8; 32],
    pub data_length: u64,
    pub extra_lease_offset: u64,
}

impl std::fmt::Debug for MutableHeader {
    // The write enabler is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutableHeader")
            .field("version", &self.version)
            .field("data_length", &self.data_length)
            .field("extra_lease_offset", &self.extra_lease_offset)
            .finish_non_exhaustive()
    }
}

/// Parses the 100-byte fixed header.
pub fn parse_header(bytes: &[u8]) -> Result<MutableHeader, ContainerError> {
    let h = bytes
        .get(..HEADER_LEN as usize)
        .ok_or(ContainerError::Truncated {
            needed: HEADER_LEN,
            have: bytes.len() as u64,
        })?;
    let version = MutableVersion::from_magic(h).ok_or(ContainerError::UnknownMutableMagic)?;
    let mut nodeid = [0u8; 20];
    nodeid.copy_from_slice(&h[32..52]);
    let mut we = [0u8; 32];
    we.copy_from_slice(&h[52..84]);
    let mut q = [0u8; 8];
    q.copy_from_slice(&h[84..92]);
    let data_length = u64::from_be_bytes(q);
    q.copy_from_slice(&h[92..100]);
    let extra_lease_offset = u64::from_be_bytes(q);
    Ok(MutableHeader {
        version,
        write_enabler_nodeid: nodeid,
        write_enabler: we,
        data_length,
        extra_lease_offset,
    })
}

/// The bytes of a fresh, empty container (472 bytes).
pub fn fresh_container(
    version: MutableVersion,
    nodeid: &NodeId,
    write_enabler: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRESH_LEN as usize);
    out.extend_from_slice(version.magic());
    out.extend_from_slice(nodeid);
    out.extend_from_slice(write_enabler);
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&DATA_OFFSET.to_be_bytes());
    out.resize(DATA_OFFSET as usize, 0);
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// A mutable container over a byte store. The header fields are cached; every mutation goes
/// through this type and keeps the cache equal to the stored bytes.
pub struct MutableShare<S> {
    store: S,
    header: MutableHeader,
    num_extra_leases: u32,
}

impl<S: ByteStore> MutableShare<S> {
    /// Initialises an empty store as a fresh container.
    pub fn create(
        mut store: S,
        version: MutableVersion,
        nodeid: &NodeId,
        write_enabler: &[u8; 32],
    ) -> Result<Self, ContainerError> {
        store.set_len(0)?;
        store.write_all_at(0, &fresh_container(version, nodeid, write_enabler))?;
        Self::open(store)
    }

    /// Opens and validates an existing container.
    pub fn open(store: S) -> Result<Self, ContainerError> {
        let header = parse_header(&read_array::<100, _>(&store, 0)?)?;
        let data_end = DATA_OFFSET
            .checked_add(header.data_length)
            .ok_or(ContainerError::Corrupt("data length overflow"))?;
        if data_end > header.extra_lease_offset {
            return Err(ContainerError::Corrupt(
                "data length exceeds container capacity",
            ));
        }
        let count = u32::from_be_bytes(read_array::<4, _>(&store, header.extra_lease_offset)?);
        let needed = header.extra_lease_offset + 4 + u64::from(count) * LEASE_LEN;
        let have = store.len()?;
        if needed > have {
            return Err(ContainerError::Truncated { needed, have });
        }
        Ok(MutableShare {
            store,
            header,
            num_extra_leases: count,
        })
    }

    pub fn header(&self) -> &MutableHeader {
        &self.header
    }

    pub fn version(&self) -> MutableVersion {
        self.header.version
    }

    pub fn data_len(&self) -> u64 {
        self.header.data_length
    }

    /// Constant-time write-enabler check.
    pub fn write_enabler_matches(&self, candidate: &[u8]) -> bool {
        ct_eq(candidate, &self.header.write_enabler)
    }

    /// Reads up to `len` bytes at `offset`, truncated at the data length.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, ContainerError> {
        let n = len.min(self.header.data_length.saturating_sub(offset));
        if n == 0 {
            return Ok(Vec::new());
        }
        read_checked(&self.store, DATA_OFFSET + offset, n)
    }

    /// How many bytes the container would grow by if `offset..offset+len` were written: what
    /// a caller checks against available space before writing.
    pub fn growth_for_write(&self, offset: u64, len: u64) -> u64 {
        match offset
            .checked_add(len)
            .and_then(|e| e.checked_add(DATA_OFFSET))
        {
            Some(end) => end.saturating_sub(self.header.extra_lease_offset),
            None => u64::MAX,
        }
    }

    /// Writes share data following Tahoe's growth rule.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ContainerError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(ContainerError::TooLarge)?;
        if end >= self.header.data_length {
            if DATA_OFFSET + end > self.header.extra_lease_offset {
                if end > MAX_MUTABLE_SHARE_SIZE {
                    return Err(ContainerError::TooLarge);
                }
                self.move_extra_leases(DATA_OFFSET + end)?;
            }
            if offset > self.header.data_length {
                self.zero_fill(
                    DATA_OFFSET + self.header.data_length,
                    offset - self.header.data_length,
                )?;
            }
            self.set_data_length(end)?;
        }
        self.store.write_all_at(DATA_OFFSET + offset, data)?;
        Ok(())
    }

    /// Applies `new_length`: lowers the data length if smaller (the container keeps its size).
    pub fn truncate_data(&mut self, new_length: u64) -> Result<(), ContainerError> {
        if new_length < self.header.data_length {
            self.set_data_length(new_length)?;
        }
        Ok(())
    }

    fn set_data_length(&mut self, n: u64) -> Result<(), ContainerError> {
        self.store.write_all_at(DATA_LENGTH_AT, &n.to_be_bytes())?;
        self.header.data_length = n;
        Ok(())
    }

    fn zero_fill(&mut self, mut at: u64, mut n: u64) -> Result<(), ContainerError> {
        let zeros = [0u8; ZERO_CHUNK];
        while n > 0 {
            let k = n.min(ZERO_CHUNK as u64);
            self.store.write_all_at(at, &zeros[..k as usize])?;
            at += k;
            n -= k;
        }
        Ok(())
    }

    fn move_extra_leases(&mut self, new_offset: u64) -> Result<(), ContainerError> {
        let old = self.header.extra_lease_offset;
        if new_offset < old {
            return Ok(()); // never shrinks
        }
        let block_len = 4 + u64::from(self.num_extra_leases) * LEASE_LEN;
        let block = read_checked(&self.store, old, block_len)?;
        // Zero the old location first (Tahoe #1528: old lease bytes must not become readable
        // share data), then write the block at its new place, then point the header at it.
        self.zero_fill(old, block_len)?;
        self.store.write_all_at(new_offset, &block)?;
        self.store
            .write_all_at(EXTRA_LEASE_OFFSET_AT, &new_offset.to_be_bytes())?;
        self.header.extra_lease_offset = new_offset;
        Ok(())
    }

    fn slot_offset(&self, slot: u32) -> Option<u64> {
        if slot < HEADER_LEASE_SLOTS {
            Some(HEADER_LEN + u64::from(slot) * LEASE_LEN)
        } else if slot - HEADER_LEASE_SLOTS < self.num_extra_leases {
            Some(
                self.header.extra_lease_offset
                    + 4
                    + u64::from(slot - HEADER_LEASE_SLOTS) * LEASE_LEN,
            )
        } else {
            None
        }
    }

    fn num_slots(&self) -> u32 {
        HEADER_LEASE_SLOTS.saturating_add(self.num_extra_leases)
    }

    fn read_slot(&self, slot: u32) -> Result<LeaseRecord, ContainerError> {
        let off = self
            .slot_offset(slot)
            .ok_or(ContainerError::Corrupt("no such lease slot"))?;
        Ok(LeaseRecord::from_mutable_bytes(&read_array::<
            MUTABLE_LEASE_LEN,
            _,
        >(
            &self.store, off
        )?))
    }

    fn write_slot(&mut self, slot: u32, lease: &LeaseRecord) -> Result<(), ContainerError> {
        let off = self
            .slot_offset(slot)
            .ok_or(ContainerError::Corrupt("no such lease slot"))?;
        self.store.write_all_at(off, &lease.to_mutable_bytes())?;
        Ok(())
    }

    /// The occupied lease slots (owner ≠ 0) with their slot numbers, in slot order.
    pub fn leases(&self) -> Result<Vec<(u32, LeaseRecord)>, ContainerError> {
        // The slot count was validated against the store length in open().
        let mut out = Vec::new();
        for slot in 0..self.num_slots() {
            let lease = self.read_slot(slot)?;
            if lease.owner_num != 0 {
                out.push((slot, lease));
            }
        }
        Ok(out)
    }

    /// Adds a lease in the first empty slot, or appends an extra lease (record first, then
    /// the count, so a torn append leaves the old count valid).
    pub fn add_lease(&mut self, lease: &LeaseRecord) -> Result<(), ContainerError> {
        for slot in 0..self.num_slots() {
            if self.read_slot(slot)?.owner_num == 0 {
                return self.write_slot(slot, lease);
            }
        }
        let n = self
            .num_extra_leases
            .checked_add(1)
            .ok_or(ContainerError::Corrupt("lease count overflow"))?;
        let off = self.header.extra_lease_offset + 4 + u64::from(self.num_extra_leases) * LEASE_LEN;
        self.store.write_all_at(off, &lease.to_mutable_bytes())?;
        self.store
            .write_all_at(self.header.extra_lease_offset, &n.to_be_bytes())?;
        self.num_extra_leases = n;
        Ok(())
    }

    /// Renews the first occupied lease whose renew secret matches (forward only).
    pub fn renew_lease(
        &mut self,
        renew_secret: &[u8; 32],
        new_expiration: u32,
    ) -> Result<bool, ContainerError> {
        let storage = self.header.version.secret_storage();
        for (slot, mut lease) in self.leases()? {
            if lease.renew_matches(storage, renew_secret) {
                if new_expiration > lease.expiration {
                    lease.expiration = new_expiration;
                    self.write_slot(slot, &lease)?;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Tahoe's `add_or_renew_lease`.
    pub fn add_or_renew_lease(
        &mut self,
        owner_num: u32,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        expiration: u32,
        nodeid: &NodeId,
    ) -> Result<(), ContainerError> {
        if !self.renew_lease(renew_secret, expiration)? {
            let storage = self.header.version.secret_storage();
            let lease = LeaseRecord::new(
                storage,
                owner_num,
                renew_secret,
                cancel_secret,
                expiration,
                *nodeid,
            );
            self.add_lease(&lease)?;
        }
        Ok(())
    }

    /// Blanks every occupied slot for which `keep` is false (Tahoe's `cancel_lease` writes a
    /// blank record and does not pack). Returns the number of occupied slots left.
    pub fn retain_leases(
        &mut self,
        mut keep: impl FnMut(&LeaseRecord) -> bool,
    ) -> Result<usize, ContainerError> {
        let blank = LeaseRecord::blank(self.header.version.secret_storage());
        let mut left = 0;
        for (slot, lease) in self.leases()? {
            if keep(&lease) {
                left += 1;
            } else {
                self.write_slot(slot, &blank)?;
            }
        }
        Ok(left)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }
}
