//! Hashing many independent messages at once.
//!
//! Tahoe hashes every block of every share separately; those hashes are independent, and a single
//! SHA-256 stream is latency-bound, so hashing several messages interleaved is faster. This module
//! is the one entry point for that: callers hand over a batch and get the hashes in order.

use super::hash::{tagged_hash, Hash};

/// `tagged_hash(tag, m)` for every message, in order.
pub fn tagged_hash_many(tag: &[u8], messages: &[&[u8]]) -> Vec<Hash> {
    messages.iter().map(|m| tagged_hash(tag, m)).collect()
}
