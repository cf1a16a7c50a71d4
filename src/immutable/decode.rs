//! placeholder
use super::BoxError;
pub trait ShareSource {
    fn read(&mut self, shnum: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError>;
}
pub trait OutputSink {}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("x")]
pub enum ShareFault {
    X,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareProblem {
    pub shnum: usize,
    pub fault: ShareFault,
}
pub struct Downloader;
pub fn download() {}
