//! The grid, without the network: server addresses (fURLs, NURLs), server identity and seeds,
//! the permuted server list, and servers-of-happiness placement.
//!
//! Everything here is a pure function of its inputs (announcements, storage indexes, the answers
//! servers gave), so that the upload and download drivers can be tested without servers and so
//! that the orderings match Tahoe's byte for byte where Tahoe's are deterministic.

pub mod furl;
pub mod happiness;
pub mod server;

pub use furl::{Furl, Hint, HintKind, Nurl, NurlScheme, UrlError};
pub use happiness::{
    happiness, place, servers_of_happiness, share_placement, Candidate, Placement, PlacementError,
    PlacementRequest,
};
pub use server::{
    permutation_seed, permuted_servers, servers_from_yaml, ServerError, StorageServerDesc,
};

#[cfg(test)]
mod tests;
