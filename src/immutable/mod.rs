//! CHK immutable files, byte-identical to Tahoe-LAFS 1.20 (digest §3).
//!
//! Sans-I/O design: nothing here opens a file or a socket. The encoder reads plaintext through
//! [`PlaintextSource`] and writes share bytes through [`ShareSink`]; the decoder reads share byte
//! ranges through [`ShareSource`] and writes plaintext to an [`OutputSink`]. The network layer
//! implements those traits (or drives the pure per-segment / per-share checks in [`decode`]
//! itself).
//!
//! - [`params`]: encoding parameters and the derived segment / block geometry;
//! - [`ueb`]: the URI extension block (build, serialize, strict parse, validation);
//! - [`layout`]: the share body layout v1/v2, the share hash chain in Tahoe's order;
//! - [`encode`]: the pure segment encoder and the file encoder (rayon, bounded window);
//! - [`decode`]: validation of every byte against the cap, and a download driver that uses any
//!   k of n shares, skips bad ones and reads only the segments a byte range needs;
//! - [`store`]: an in-memory share store implementing both share traits (tests, tools).
//!
//! Invariants: a read key or cap never appears in an error or `Debug` output; no share byte is
//! used before its hash chain up to the cap has been verified; memory is bounded by a window of
//! segments (plus the per-segment hash lists, 32 bytes per segment per share), whatever the file
//! size.

pub mod decode;
pub mod encode;
pub mod layout;
pub mod params;
pub mod store;
pub mod ueb;

pub use decode::{download, Downloader, OutputSink, ShareFault, ShareProblem, ShareSource};
pub use encode::{
    encode_bytes, encode_file, resolve_key, EncodedFile, Encoder, KeySource, PlaintextSource,
    ShareSink, SliceSource,
};
pub use params::{EncodingParams, Geometry};
pub use store::MemoryShares;

use thiserror::Error;

/// An error from a trait implementation supplied by the caller (I/O happens there).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the immutable layer. None of them carries key material.
#[derive(Debug, Error)]
pub enum ImmutableError {
    #[error("invalid encoding parameters: {0}")]
    BadParameters(&'static str),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    #[error(transparent)]
    Ueb(#[from] ueb::UebError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("reading the plaintext failed")]
    Source(#[source] BoxError),
    #[error("the plaintext source returned a different size or content on the second pass")]
    SourceChanged,
    #[error("writing share {shnum} failed")]
    Sink {
        shnum: usize,
        #[source]
        source: BoxError,
    },
    #[error("finishing the shares failed")]
    SinkFinish(#[source] BoxError),
    #[error("writing the plaintext output failed")]
    Output(#[source] BoxError),
    #[error("byte range {offset}+{len} is outside the file of {size} bytes")]
    BadRange { offset: u64, len: u64, size: u64 },
    #[error("not enough good shares: {needed} needed; problems: {}", fmt_problems(.problems))]
    NotEnoughShares {
        needed: usize,
        problems: Vec<ShareProblem>,
    },
}

fn fmt_problems(p: &[ShareProblem]) -> String {
    p.iter()
        .map(|p| format!("share {}: {}", p.shnum, p.fault))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
