//! The storage server's share store: everything below HTTP.
//!
//! - [`container`]: Tahoe 1.20's share container formats (immutable v1/v2, mutable v1/v2, lease
//!   records). Pure byte code over the [`container::ByteStore`] trait; it performs no I/O of its
//!   own and parses untrusted bytes without panicking.
//! - [`disk`]: the on-disk store in Tahoe's exact directory layout
//!   (`storage/shares/<si[:2]>/<si>/<shnum>`), immutable uploads, mutable test-and-write,
//!   leases, expiry/garbage collection, reserved space and corruption advisories.
//!
//! Invariant: a storage directory written by lafs can be served by Tahoe 1.20 and vice versa.
//! Lease secrets and write enablers are secrets: no `Debug` impl or error message prints them.

pub mod container;
pub mod disk;

/// A storage index (16 bytes).
pub type StorageIndex = [u8; 16];

/// A server node id: the raw 20-byte Foolscap TubID, stored in mutable containers and leases.
pub type NodeId = [u8; 20];

/// A share number. Tahoe accepts any unsigned integer in paths; 32 bits is ample.
pub type ShareNum = u32;

/// Seconds a newly added or renewed lease lasts (Tahoe's fixed `DEFAULT_RENEWAL_TIME`).
pub const LEASE_DURATION_SECS: u64 = 31 * 24 * 60 * 60;

/// Tahoe's `MAX_MUTABLE_SHARE_SIZE` (69105 TB), also announced in the version document.
pub const MAX_MUTABLE_SHARE_SIZE: u64 = 69_105 * 1_000 * 1_000 * 1_000 * 1_000;

/// Compares two byte strings in time independent of where they differ (lengths are public).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}
