//! The content hash of a cache file written sequentially, computed off the write path.
//!
//! A [`HashJob`] owns one [`ContentHasher`] fed with bytes `0 .. fed` of a cache file. A write
//! at the file's end calls [`HashJob::extend`] after its bytes are in the file: a small write
//! is hashed at once from the caller's bytes (when the job has caught up: no thread hand-off
//! for a small file), otherwise a blocking task reads the new bytes back from the cache file
//! (they are in the page cache: written just before) and hashes them while the writer goes on.
//! So a sequential writer pays for `pwrite` only, and the hash runs beside it on another core.
//!
//! [`HashJob::finish`] waits until every byte given is hashed, then gives the key (the upload
//! calls it: the only wait left at close is the hash of the last writes).
//!
//! Behind the hash, the pages of a large file leave the page cache ([`WriteBehind`]): the
//! task starts the write-back of what it hashed and drops it a window later. It is the last
//! reader of those bytes before the upload, and the writes that follow reuse the pages. The
//! caller's inline hashing never waits for the disk: when pages are due, it starts the task.
//!
//! Invariants: bytes are fed strictly in file order, each once; `fed <= target`; at most one
//! task hashes a job at a time, holding at most [`CHUNK`] bytes of buffer; a cancelled job
//! (the file changed other than at its end, or was dropped) never gives a key; a read error
//! of the cache file gives no key (the upload then computes it from the file).

use super::backend::{ContentHasher, ContentKey};
use super::pagecache::WriteBehind;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Bytes read back and hashed per step of the background task (its buffer).
pub const CHUNK: usize = 256 << 10;
/// Writes up to this size are hashed by the caller when the job has caught up.
pub const INLINE_MAX: usize = 128 << 10;

struct JobState {
    /// `None` while the task feeds it (outside the lock), or once finished or failed.
    hasher: Option<Box<dyn ContentHasher>>,
    /// Bytes `0 .. fed` are hashed.
    fed: u64,
    /// Bytes `0 .. target` are in the file, final while the job is not cancelled.
    target: u64,
    /// A task is hashing.
    running: bool,
    cancelled: bool,
    /// Reading the cache file failed: no key.
    failed: bool,
    /// The page-cache state of `0 .. fed` (only the running task changes it).
    pages: WriteBehind,
}

struct Shared {
    st: Mutex<JobState>,
    file: Arc<File>,
    /// Signalled whenever the task stops (caught up, cancelled or failed).
    done: Notify,
    /// Where the task runs (`None`: the caller of `extend` hashes).
    rt: Option<tokio::runtime::Handle>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The hash of one cache file's content while it is written at its end from empty.
/// Dropping it cancels it.
pub struct HashJob {
    shared: Arc<Shared>,
}

impl HashJob {
    /// A job over `file` (empty so far), hashing on the blocking threads of `rt` (with `None`,
    /// [`HashJob::extend`] hashes before it returns).
    pub fn new(
        hasher: Box<dyn ContentHasher>,
        file: Arc<File>,
        rt: Option<tokio::runtime::Handle>,
    ) -> Self {
        HashJob {
            shared: Arc::new(Shared {
                st: Mutex::new(JobState {
                    hasher: Some(hasher),
                    fed: 0,
                    target: 0,
                    running: false,
                    cancelled: false,
                    failed: false,
                    pages: WriteBehind::default(),
                }),
                file,
                done: Notify::new(),
                rt,
            }),
        }
    }

    /// Bytes `end - data.len() .. end` of the file are now written (they are `data`): hash them.
    /// They must follow the bytes given before; otherwise the job is cancelled.
    pub fn extend(&self, end: u64, data: &[u8]) {
        let mut s = self.shared.lock();
        if s.cancelled || s.failed {
            return;
        }
        let start = end.saturating_sub(data.len() as u64);
        if start != s.target {
            s.cancelled = true;
            s.hasher = None;
            return;
        }
        s.target = end;
        if s.running || s.fed == end {
            return;
        }
        if s.fed == start && data.len() <= INLINE_MAX {
            if let Some(h) = s.hasher.as_mut() {
                h.update(data);
                s.fed = end;
            }
            if !s.pages.due(s.fed) {
                return;
            }
        }
        s.running = true;
        drop(s);
        let shared = Arc::clone(&self.shared);
        match &self.shared.rt {
            Some(rt) => {
                rt.spawn_blocking(move || run(&shared));
            }
            None => run(&shared),
        }
    }

    /// The file changed other than at its end: no key.
    pub fn cancel(&self) {
        let mut s = self.shared.lock();
        s.cancelled = true;
        s.hasher = None;
    }

    /// The key of a file of `size` bytes, once every byte given is hashed; `None` when this
    /// job gives none (cancelled, failed, or not fed exactly `size` bytes).
    pub async fn finish(self, size: u64) -> Option<ContentKey> {
        loop {
            let stopped = self.shared.done.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            {
                let mut s = self.shared.lock();
                if s.cancelled || s.failed {
                    return None;
                }
                if !s.running && s.fed >= s.target {
                    if s.fed != size {
                        return None;
                    }
                    return s.hasher.take().and_then(|h| h.finish(size));
                }
            }
            stopped.await;
        }
    }
}

impl Drop for HashJob {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The background task: hashes from `fed` up to `target` (which may grow meanwhile), reading
/// the bytes back from the file, until caught up or cancelled.
fn run(shared: &Shared) {
    let mut buf = Vec::new();
    loop {
        release_pages(shared);
        let (mut h, from, to) = {
            let mut s = shared.lock();
            let idle = s.cancelled || s.fed >= s.target;
            let h = if idle { None } else { s.hasher.take() };
            let Some(h) = h else {
                s.running = false;
                drop(s);
                shared.done.notify_one();
                return;
            };
            let to = s.target.min(s.fed + CHUNK as u64);
            (h, s.fed, to)
        };
        // `to - from <= CHUNK`.
        buf.resize((to - from) as usize, 0);
        if let Err(e) = shared.file.read_exact_at(&mut buf, from) {
            tracing::debug!("content hash: reading the cache file failed: {e}");
            let mut s = shared.lock();
            s.failed = true;
            s.running = false;
            drop(s);
            shared.done.notify_one();
            return;
        }
        h.update(&buf);
        let mut s = shared.lock();
        // A job cancelled meanwhile stays without a hasher.
        if !s.cancelled {
            s.hasher = Some(h);
            s.fed = to;
        }
    }
}

/// The task's page-cache step for what is hashed so far (see [`WriteBehind`]); it may wait for
/// the disk, so only the task calls it, outside the lock.
fn release_pages(shared: &Shared) {
    let (mut pages, fed) = {
        let mut s = shared.lock();
        if s.cancelled || !s.pages.due(s.fed) {
            return;
        }
        (std::mem::take(&mut s.pages), s.fed)
    };
    pages.consumed(&shared.file, fed);
    shared.lock().pages = pages;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Records every byte fed, in order, so a test checks exactly what was hashed.
    struct Recorder(Arc<Mutex<Vec<u8>>>);

    impl ContentHasher for Recorder {
        fn update(&mut self, data: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(data);
        }
        fn finish(self: Box<Self>, size: u64) -> Option<ContentKey> {
            let fed = self.0.lock().unwrap();
            assert_eq!(fed.len() as u64, size);
            let mut k = [0u8; 16];
            for (i, b) in fed.iter().enumerate() {
                k[i % 16] ^= *b;
            }
            Some(ContentKey(k))
        }
    }

    fn key_of(data: &[u8]) -> ContentKey {
        let mut k = [0u8; 16];
        for (i, b) in data.iter().enumerate() {
            k[i % 16] ^= *b;
        }
        ContentKey(k)
    }

    fn setup() -> (
        tempfile::NamedTempFile,
        Arc<File>,
        Arc<Mutex<Vec<u8>>>,
        HashJob,
    ) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let file = Arc::new(tmp.reopen().unwrap());
        let fed = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Handle::try_current().ok();
        let job = HashJob::new(Box::new(Recorder(Arc::clone(&fed))), Arc::clone(&file), rt);
        (tmp, file, fed, job)
    }

    async fn wait_key(job: HashJob, size: u64) -> Option<ContentKey> {
        tokio::time::timeout(std::time::Duration::from_secs(60), job.finish(size))
            .await
            .expect("the hash job never finished")
    }

    /// A 40 MiB file written in order, in pieces the caller hashes (128 KiB) and pieces the
    /// task hashes (1 MiB): the key is right, and the pages of what was hashed left the page
    /// cache (from the inline path too: the task is started for them).
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pages_of_a_large_file_leave_the_page_cache_behind_the_hash() {
        use crate::vfs::pagecache::tests::{disk_temp_file, resident_pages};
        for piece in [INLINE_MAX, 1 << 20] {
            let Some(tmp) = disk_temp_file() else {
                eprintln!("SKIP: the temporary directory is on tmpfs");
                return;
            };
            let file = Arc::new(tmp.reopen().unwrap());
            let fed = Arc::new(Mutex::new(Vec::new()));
            let rt = tokio::runtime::Handle::try_current().ok();
            let job = HashJob::new(Box::new(Recorder(Arc::clone(&fed))), Arc::clone(&file), rt);
            let data: Vec<u8> = (0..40u32 << 20).map(|i| (i % 241) as u8).collect();
            for (i, c) in data.chunks(piece).enumerate() {
                let off = (i * piece) as u64;
                file.write_all_at(c, off).unwrap();
                job.extend(off + c.len() as u64, c);
            }
            let key = wait_key(job, data.len() as u64).await;
            assert_eq!(key, Some(key_of(&data)), "pieces of {piece}");
            let left = resident_pages(&file, 0, 32 << 20);
            assert!(
                left < 256,
                "pieces of {piece}: {left} of 8192 pages still cached"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_writes_are_hashed_in_the_background_in_order_small_ones_inline() {
        let (_tmp, file, fed, job) = setup();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        // Small pieces (inline), then large ones (background), then small ones while the
        // background task may still run: every byte once, in order.
        let mut pieces = vec![1000, 5000, 60_000, INLINE_MAX];
        pieces.extend([1 << 20, 700_001, 3 * CHUNK + 5]);
        let mut off = 0usize;
        for p in pieces.into_iter().chain(std::iter::repeat(4096)) {
            let end = (off + p).min(data.len());
            file.write_all_at(&data[off..end], off as u64).unwrap();
            job.extend(end as u64, &data[off..end]);
            off = end;
            if off == data.len() {
                break;
            }
        }
        let key = wait_key(job, data.len() as u64).await;
        assert_eq!(key, Some(key_of(&data)));
        assert_eq!(*fed.lock().unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_job_or_a_gap_gives_no_key() {
        let (_tmp, file, _fed, job) = setup();
        let data = vec![7u8; 2 << 20];
        file.write_all_at(&data, 0).unwrap();
        job.extend(data.len() as u64, &data);
        job.cancel();
        assert_eq!(wait_key(job, data.len() as u64).await, None);

        let (_tmp, file, _fed, job) = setup();
        file.write_all_at(&data, 0).unwrap();
        job.extend(1000, &data[..1000]);
        // Bytes 1000 .. 2000 never given: not the continuation.
        job.extend(3000, &data[2000..3000]);
        assert_eq!(wait_key(job, 3000).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_size_other_than_the_bytes_fed_gives_no_key() {
        let (_tmp, file, _fed, job) = setup();
        let data = vec![3u8; 1 << 20];
        file.write_all_at(&data, 0).unwrap();
        job.extend(data.len() as u64, &data);
        assert_eq!(wait_key(job, data.len() as u64 + 1).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_file_shorter_than_announced_gives_no_key() {
        let (mut tmp, _file, _fed, job) = setup();
        tmp.write_all(&[1u8; 1000]).unwrap();
        tmp.flush().unwrap();
        // Announces 1 MiB though the file holds 1000 bytes: the read-back fails.
        job.extend(1 << 20, &vec![1u8; 1 << 20]);
        assert_eq!(wait_key(job, 1 << 20).await, None);
    }

    #[test]
    fn without_a_runtime_the_caller_hashes() {
        let (_tmp, file, fed, job) = setup();
        let data = vec![9u8; 1 << 20];
        file.write_all_at(&data, 0).unwrap();
        job.extend(data.len() as u64, &data);
        // Hashed before `extend` returned: nothing left to wait for.
        assert_eq!(fed.lock().unwrap().len(), data.len());
        let key = futures::executor::block_on(job.finish(data.len() as u64));
        assert_eq!(key, Some(key_of(&data)));
    }
}
