//! The integration tests, all in one test binary (`cargo test --test it`; one module per area,
//! run one with `cargo test --test it MODULE::`). One binary links the crate and its
//! dependencies once, where a binary per file would link them once per file.
//!
//! The modules share one process and run on parallel test threads, so no test may rely on a
//! process of its own: no `std::env::set_var`, no change of the current directory, no global
//! subscriber or signal disposition of its own. The tests that drive real Tahoe-LAFS or Tor
//! processes, or keep every core busy, take [`common::heavy`] so that only one of them runs at
//! a time, as when each was a binary of its own.

mod common;

mod chk_vectors;
mod cli_debug_encode;
mod cli_files;
mod client_check;
mod client_immutable;
mod client_mutable;
mod fuse_backend;
mod interop_chk;
mod interop_client;
mod interop_client_dirs;
mod interop_mixed_grid;
mod interop_mutable;
mod interop_storage_node;
mod protocol_loopback;
mod protocol_messages_prop;
mod protocol_tahoe_interop;
mod ssk_vectors;
mod storage_node;
mod storage_tahoe_interop;
mod tor_network;
mod zfec_interop;
