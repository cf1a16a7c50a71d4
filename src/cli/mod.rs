//! The `lafs` command line (placeholder).
