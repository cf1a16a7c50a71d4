//! CHK immutable files (placeholder).
