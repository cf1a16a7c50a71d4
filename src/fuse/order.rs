//! Per-inode ordering of the requests that change an inode.
//!
//! The adapter answers each request on its own tokio task, and tasks may start in any order.
//! Requests that change one inode (write, setattr, fallocate, flush, fsync, release, open,
//! setxattr, removexattr) must take effect in the order the kernel sent them, so each takes a
//! [`Turn`] on the FUSE thread, in arrival order, and its task waits for the turns taken before it
//! on the same inode to end before it runs. Requests on different inodes, and requests that only
//! look (read, getattr, getxattr, lookup), are not held back.
//!
//! Invariants: a turn waits only for turns taken earlier (so no cycle, hence no deadlock, even
//! for a request that takes turns on several inodes in one call); the table holds an entry only
//! for an inode with a turn not yet ended (the last turn to end removes it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The turns outstanding per inode: the id of the latest turn and the receiver the next turn waits
/// on (it fires when the latest turn ends).
#[derive(Default)]
pub struct InodeOrder {
    table: Mutex<HashMap<u64, (u64, oneshot::Receiver<()>)>>,
    next_id: AtomicU64,
}

/// A place in an inode's queue; ending it (drop) lets the next one run.
pub struct Turn {
    order: Arc<InodeOrder>,
    ino: u64,
    id: u64,
    prev: Option<oneshot::Receiver<()>>,
    /// Dropped when this turn ends, which wakes the next turn's `prev`.
    _done: oneshot::Sender<()>,
}

impl InodeOrder {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, oneshot::Receiver<()>)>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next turn on `ino` (call in arrival order, on the thread that receives requests).
    pub fn enter(self: &Arc<Self>, ino: u64) -> Turn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let prev = self.table().insert(ino, (id, rx)).map(|(_, r)| r);
        Turn {
            order: Arc::clone(self),
            ino,
            id,
            prev,
            _done: tx,
        }
    }

    /// Whether a turn on `ino` has not ended yet (a request may then not jump the queue).
    pub fn busy(&self, ino: u64) -> bool {
        self.table().contains_key(&ino)
    }
}

impl Turn {
    /// Waits until every turn taken before this one on the same inode has ended.
    /// Cancel-safe: dropped unfinished, a later call waits again.
    pub async fn wait(&mut self) {
        if let Some(p) = self.prev.as_mut() {
            // An error only means the earlier turn ended (its sender dropped): our go.
            let _ = p.await;
        }
        self.prev = None;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut t = self.order.table();
        // Still the latest turn of the inode: nobody queued behind, so the entry goes.
        if t.get(&self.ino).is_some_and(|(id, _)| *id == self.id) {
            t.remove(&self.ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn turns_on_one_inode_run_in_arrival_order_even_when_the_first_is_slow() {
        let order = Arc::new(InodeOrder::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let mut turn = order.enter(7);
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                turn.wait().await;
                // The earliest turns take longest: without the queue they would finish last.
                tokio::time::sleep(Duration::from_millis(20u64.saturating_sub(i))).await;
                log.lock().unwrap().push(i);
                drop(turn);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert!(
            !order.busy(7),
            "the table forgets an inode once its turns ended"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_inodes_are_not_held_back() {
        let order = Arc::new(InodeOrder::default());
        let blocker = order.enter(1);
        assert!(order.busy(1) && !order.busy(2));
        let mut other = order.enter(2);
        // Would hang (and time out) if inode 2 waited for inode 1's turn.
        tokio::time::timeout(Duration::from_secs(5), other.wait())
            .await
            .expect("inode 2 runs while inode 1 is busy");
        let mut behind = order.enter(1);
        let waiting = tokio::time::timeout(Duration::from_millis(50), behind.wait()).await;
        assert!(
            waiting.is_err(),
            "a later turn on inode 1 waits for the earlier one"
        );
        drop(blocker);
        tokio::time::timeout(Duration::from_secs(5), behind.wait())
            .await
            .expect("runs once the earlier turn ended");
        drop(behind);
        drop(other);
        assert!(!order.busy(1) && !order.busy(2));
    }
}
