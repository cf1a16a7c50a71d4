//! An in-memory [`DirectoryStore`]: the backing "mutable file" is a byte vector and a version
//! counter behind a mutex. Clones share the same file, so two [`super::Dirnode`]s over clones of
//! one store behave like two writers of one directory.

use super::ops::{DirectoryStore, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    body: Vec<u8>,
    version: u64,
}

/// A shared in-memory backing file with test-and-write semantics.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    writekey: Option<[u8; 16]>,
    replaces: Arc<AtomicUsize>,
}

impl MemoryStore {
    /// A new, empty (version 0) backing file; `writekey` `None` makes it read-only.
    pub fn new(writekey: Option<[u8; 16]>) -> Self {
        MemoryStore {
            state: Arc::default(),
            writekey,
            replaces: Arc::default(),
        }
    }

    /// A backing file holding `body`.
    pub fn with_body(writekey: Option<[u8; 16]>, body: Vec<u8>) -> Self {
        let s = Self::new(writekey);
        if let Ok(mut st) = s.state.lock() {
            st.body = body;
        }
        s
    }

    /// Another handle on the same file, without the writekey (a read-only cap holder).
    pub fn read_only(&self) -> Self {
        MemoryStore {
            state: Arc::clone(&self.state),
            writekey: None,
            replaces: Arc::clone(&self.replaces),
        }
    }

    /// How many successful replaces (publishes) happened, over all handles.
    pub fn replace_count(&self) -> usize {
        self.replaces.load(Ordering::SeqCst)
    }

    /// The current body.
    pub fn body(&self) -> Vec<u8> {
        self.state
            .lock()
            .map(|s| s.body.clone())
            .unwrap_or_default()
    }
}

impl DirectoryStore for MemoryStore {
    type Version = u64;

    fn read(&self) -> Result<(Vec<u8>, u64), StoreError> {
        let st = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))?;
        Ok((st.body.clone(), st.version))
    }

    fn replace(&self, expected: &u64, new: Vec<u8>) -> Result<u64, StoreError> {
        if self.writekey.is_none() {
            return Err(StoreError::Backend("read-only handle".into()));
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))?;
        if st.version != *expected {
            return Err(StoreError::Conflict);
        }
        st.body = new;
        st.version += 1;
        self.replaces.fetch_add(1, Ordering::SeqCst);
        Ok(st.version)
    }

    fn writekey(&self) -> Option<[u8; 16]> {
        self.writekey
    }
}
