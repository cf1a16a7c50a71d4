//! Drop-behind for the kernel's page cache of a large file read in order.
//!
//! The mount opens files without `FOPEN_KEEP_CACHE`, so the kernel empties a file's page cache
//! at every open: what it caches serves only the handles open now. A reader going through a
//! large file in order never reads its pages again, yet they stay until memory runs short,
//! pushing out other data. And on a virtual machine that returns free pages to its host, the
//! kernel's copy of each reply into pages never used before is several times slower than into
//! pages freed a moment ago (measured here: a third of the mount's CPU for a 1 GiB read).
//!
//! So while a file has exactly one open handle and its reads come in order, the pages more
//! than [`LAG`] behind the newest read are invalidated (`FUSE_NOTIFY_INVAL_INODE`) in steps of
//! [`WINDOW`], once the reader is past [`MIN_BYTES`]. The kernel's read-ahead runs at most a
//! few MiB ahead of the reader, so the reader has consumed those pages; if it goes back, the
//! kernel asks again (slower, never wrong). With two handles open no page is dropped: another
//! reader may be behind. [`ReadBehind::read`] only decides; the caller sends the invalidation
//! from a blocking task, never the FUSE thread (the kernel locks each page it drops, and a
//! page waiting for a read reply would wait for the thread that sends the reply).

use std::collections::HashMap;
use std::sync::Mutex;

/// The unit of invalidation.
pub const WINDOW: u64 = 4 << 20;
/// How far behind the newest read the pages stay.
pub const LAG: u64 = 8 << 20;
/// Nothing is dropped before this much of a file is behind the reader.
pub const MIN_BYTES: u64 = 16 << 20;
/// A read starting this close to the end of the reads before it counts as in order (the
/// kernel's read-ahead requests may arrive slightly out of order).
const SLACK: u64 = 2 << 20;
/// Reads in order in a row before pages are dropped: a random reader that lands near the end
/// once in a while is no sequential reader.
const STREAK: u32 = 8;

#[derive(Debug, Default)]
struct Track {
    /// Open handles of the inode.
    opens: u32,
    /// The furthest end of a read so far.
    end: u64,
    /// The pages of `0 .. dropped` were invalidated.
    dropped: u64,
    /// Reads in order in a row.
    streak: u32,
}

/// Per-inode read tracks; see the module doc.
#[derive(Debug, Default)]
pub struct ReadBehind {
    files: Mutex<HashMap<u64, Track>>,
}

impl ReadBehind {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Track>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle of `ino` was opened.
    pub fn opened(&self, ino: u64) {
        self.files().entry(ino).or_default().opens += 1;
    }

    /// A handle of `ino` was released.
    pub fn released(&self, ino: u64) {
        let mut f = self.files();
        if let Some(t) = f.get_mut(&ino) {
            t.opens = t.opens.saturating_sub(1);
            if t.opens == 0 {
                f.remove(&ino);
            }
        }
    }

    /// A read of `offset .. offset + len` of `ino` arrived: the range `(start, len)` whose
    /// pages should now be invalidated, if any.
    pub fn read(&self, ino: u64, offset: u64, len: u64) -> Option<(u64, u64)> {
        let mut f = self.files();
        let t = f.get_mut(&ino)?;
        let in_order = offset <= t.end.saturating_add(SLACK) && offset + SLACK >= t.end;
        t.streak = if in_order {
            t.streak.saturating_add(1)
        } else {
            0
        };
        t.end = t.end.max(offset.saturating_add(len));
        if t.streak < STREAK || t.opens != 1 {
            return None;
        }
        let to = offset.saturating_sub(LAG) / WINDOW * WINDOW;
        if to < MIN_BYTES || to <= t.dropped {
            return None;
        }
        let from = t.dropped;
        t.dropped = to;
        Some((from, to - from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K128: u64 = 128 << 10;

    /// Every range dropped while reading `0 .. size` in `step`-sized reads, in order.
    fn drops(rb: &ReadBehind, ino: u64, size: u64, step: u64) -> Vec<(u64, u64)> {
        (0..size.div_ceil(step))
            .filter_map(|i| rb.read(ino, i * step, step))
            .collect()
    }

    #[test]
    fn an_in_order_reader_with_one_handle_drops_whole_windows_lag_behind() {
        let rb = ReadBehind::default();
        rb.opened(7);
        let d = drops(&rb, 7, 64 << 20, K128);
        // Contiguous from 0, in windows, the first once 16 MiB are past the lag.
        assert_eq!(d.first(), Some(&(0, MIN_BYTES)));
        let mut at = 0;
        for (from, len) in &d {
            assert_eq!(*from, at);
            assert_eq!(len % WINDOW, 0);
            at += len;
        }
        // The last read started at 64 MiB - 128 KiB: everything up to the window before
        // (that start - LAG) is dropped, nothing nearer.
        assert_eq!(at, ((64 << 20) - K128 - LAG) / WINDOW * WINDOW);
        // A small file drops nothing.
        rb.opened(8);
        assert!(drops(&rb, 8, MIN_BYTES + LAG - 1, K128).is_empty());
    }

    #[test]
    fn two_handles_or_reads_out_of_order_drop_nothing() {
        let rb = ReadBehind::default();
        // No open handle known (an mmap after close): nothing.
        assert!(drops(&rb, 1, 64 << 20, K128).is_empty());
        rb.opened(1);
        rb.opened(1);
        assert!(drops(&rb, 1, 64 << 20, K128).is_empty());
        rb.released(1);
        rb.released(1);
        assert!(rb.files().is_empty(), "a released inode is forgotten");
        // One handle, but the reads jump about: nothing.
        rb.opened(2);
        for i in 0..4096u64 {
            let off = (i * 7919 % 512) * K128;
            assert_eq!(rb.read(2, off, K128), None, "read at {off}");
        }
    }

    #[test]
    fn reads_slightly_out_of_order_still_count_and_a_reread_from_the_start_drops_nothing() {
        let rb = ReadBehind::default();
        rb.opened(3);
        // Pairs of read-ahead requests swapped: in order within the slack.
        let mut dropped = 0;
        for i in (0..512u64).step_by(2) {
            for j in [i + 1, i] {
                if let Some((from, len)) = rb.read(3, j * K128, K128) {
                    assert_eq!(from, dropped);
                    dropped += len;
                }
            }
        }
        assert!(dropped >= 40 << 20, "only {dropped} bytes dropped");
        // Back to the start: out of order, then in order again below what was dropped.
        assert_eq!(drops(&rb, 3, 40 << 20, K128), vec![]);
    }
}
