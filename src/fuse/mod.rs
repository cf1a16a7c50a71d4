//! The mount: the grid [`backend`] of the filesystem layer (and, later, the fuser adapter).

pub mod backend;

pub use backend::GridBackend;
