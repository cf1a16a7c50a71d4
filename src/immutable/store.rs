//! An in-memory share store: a [`ShareSink`] for the encoder and a [`ShareSource`] for the
//! decoder. Used by tests, benches and tools; it holds whole share bodies, so it is not for big
//! files in production.

use super::decode::ShareSource;
use super::encode::ShareSink;
use super::BoxError;

/// Share bodies indexed by share number (an empty body means "no share").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryShares {
    pub shares: Vec<Vec<u8>>,
}

impl MemoryShares {
    pub fn new(shares: Vec<Vec<u8>>) -> Self {
        MemoryShares { shares }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("share {shnum}: no bytes at {offset}+{len}")]
struct Missing {
    shnum: usize,
    offset: u64,
    len: usize,
}

impl ShareSink for MemoryShares {
    fn write(&mut self, shnum: usize, offset: u64, data: &[u8]) -> Result<(), BoxError> {
        if self.shares.len() <= shnum {
            self.shares.resize(shnum + 1, Vec::new());
        }
        let share = &mut self.shares[shnum];
        let start = usize::try_from(offset)?;
        let end = start + data.len();
        if share.len() < end {
            share.resize(end, 0);
        }
        share[start..end].copy_from_slice(data);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl ShareSource for MemoryShares {
    fn read(&mut self, shnum: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        let missing = || Missing {
            shnum,
            offset,
            len: buf.len(),
        };
        let share = self.shares.get(shnum).ok_or_else(missing)?;
        let start = usize::try_from(offset).map_err(|_| missing())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| share.get(start..end))
            .ok_or_else(missing)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
