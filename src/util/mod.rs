//! Small byte-level encodings shared by every format layer: Tahoe's base32 and netstrings.
//!
//! Both are pure functions over byte slices; they never allocate more than their output and never
//! panic on hostile input.

pub mod base32;
pub mod netstring;
