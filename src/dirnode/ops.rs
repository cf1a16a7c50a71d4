//! Directory operations over a backing mutable file with test-and-write semantics.
//!
//! A batch of [`Change`]s is applied to one snapshot and published with ONE
//! [`DirectoryStore::replace`]. When the replace loses a race (the file moved past the version we
//! read), the new version is read and compared with the snapshot the batch was built on: every
//! change touching a child that the other writer changed is dropped and reported in
//! [`BatchReport::conflicts`]; the remaining changes are re-applied to the new version and
//! published again. Another writer's change is therefore never overwritten silently.
//!
//! Precondition failures (missing child, existing child without overwrite, read-only directory)
//! fail the whole batch before anything is published: a batch is all-or-nothing except for the
//! conflicts it reports.
//!
//! Metadata follows Tahoe: set/overwrite/set-metadata run [`update_metadata`], and a child whose
//! resulting metadata has `no-write` loses its write cap. A rename within one directory is one
//! rewrite; the moved link gets metadata as Tahoe's `move_child_to` gives it (the source's user
//! keys, the destination's old `tahoe` times if it replaced a child, else fresh ones).

use super::metadata::{update_metadata, Metadata};
use super::pack::{normalize, Child, DirKind, Directory};
use super::DirnodeError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// What the backing file layer reports.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The file is no longer at the expected version.
    #[error("the backing file changed since it was read")]
    Conflict,
    /// Anything else (unreachable servers, corrupt shares...), already free of secrets.
    #[error("{0}")]
    Backend(String),
}

/// The backing mutable file of a directory, as this layer needs it.
pub trait DirectoryStore {
    /// Identifies one version of the file (e.g. sequence number and root hash).
    type Version: Clone + PartialEq;

    /// The current plaintext and its version.
    fn read(&self) -> Result<(Vec<u8>, Self::Version), StoreError>;

    /// Replaces the plaintext if the file is still at `expected` (else [`StoreError::Conflict`]);
    /// returns the new version.
    fn replace(&self, expected: &Self::Version, new: Vec<u8>) -> Result<Self::Version, StoreError>;

    /// The file's writekey, `None` for a read-only handle.
    fn writekey(&self) -> Option<[u8; 16]>;
}

/// One change to a directory. Names need not be normalised.
#[derive(Clone)]
pub enum Change {
    /// Add or replace a child (Tahoe's `set_uri`). `metadata: None` keeps the old user metadata
    /// when replacing.
    Set {
        name: String,
        rw_uri: Option<Vec<u8>>,
        ro_uri: Option<Vec<u8>>,
        metadata: Option<Metadata>,
        overwrite: bool,
    },
    /// Replace a child's user metadata (`set_metadata_for`); the child must exist.
    SetMetadata { name: String, metadata: Metadata },
    /// Remove a child; with `must_exist`, a missing child is an error.
    Remove { name: String, must_exist: bool },
    /// Move a child to another name in the same directory.
    Rename {
        from: String,
        to: String,
        overwrite: bool,
    },
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Caps are secrets: never printed.
        match self {
            Change::Set {
                name, overwrite, ..
            } => f
                .debug_struct("Set")
                .field("name", name)
                .field("overwrite", overwrite)
                .finish_non_exhaustive(),
            Change::SetMetadata { name, .. } => f
                .debug_struct("SetMetadata")
                .field("name", name)
                .finish_non_exhaustive(),
            Change::Remove { name, must_exist } => f
                .debug_struct("Remove")
                .field("name", name)
                .field("must_exist", must_exist)
                .finish(),
            Change::Rename {
                from,
                to,
                overwrite,
            } => f
                .debug_struct("Rename")
                .field("from", from)
                .field("to", to)
                .field("overwrite", overwrite)
                .finish(),
        }
    }
}

impl Change {
    /// The normalised names this change reads or writes.
    fn touched(&self) -> Vec<String> {
        match self {
            Change::Set { name, .. }
            | Change::SetMetadata { name, .. }
            | Change::Remove { name, .. } => vec![normalize(name)],
            Change::Rename { from, to, .. } => vec![normalize(from), normalize(to)],
        }
    }
}

/// A change dropped because another writer changed a child it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeConflict {
    /// Position of the change in the batch.
    pub index: usize,
    /// The (normalised) names both writers changed.
    pub names: Vec<String>,
}

/// The outcome of a batch.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Whether a new version was published (false when the batch changed nothing).
    pub published: bool,
    /// How many publish attempts were made (1 unless there were races).
    pub attempts: usize,
    /// Changes not applied because they overlapped another writer's changes.
    pub conflicts: Vec<ChangeConflict>,
    /// Children removed by `Remove` changes, by change index.
    pub removed: BTreeMap<usize, Child>,
}

impl BatchReport {
    /// An error naming every conflicting child, when there were conflicts.
    pub fn into_result(self) -> Result<BatchReport, DirnodeError> {
        if self.conflicts.is_empty() {
            Ok(self)
        } else {
            let names: BTreeSet<String> = self
                .conflicts
                .iter()
                .flat_map(|c| c.names.iter().cloned())
                .collect();
            Err(DirnodeError::Conflict(names.into_iter().collect()))
        }
    }
}

/// Drops the write cap when the metadata says `no-write` (Tahoe's `create_readonly_node`).
fn finish_child(rw: Option<Vec<u8>>, ro: Option<Vec<u8>>, md: Metadata) -> Child {
    if md.no_write() {
        Child::new(None, ro, md)
    } else {
        Child::new(rw, ro, md)
    }
}

/// Applies one change to `dir`, returning the removed child for `Remove`.
fn apply_change(dir: &mut Directory, ch: &Change, now: f64) -> Result<Option<Child>, DirnodeError> {
    match ch {
        Change::Set {
            name,
            rw_uri,
            ro_uri,
            metadata,
            overwrite,
        } => {
            let old = dir.get(name);
            if old.is_some() && !overwrite {
                return Err(DirnodeError::ExistingChild(normalize(name)));
            }
            let md = update_metadata(old.map(|c| &c.metadata), metadata.as_ref(), now);
            dir.insert(name, finish_child(rw_uri.clone(), ro_uri.clone(), md));
            Ok(None)
        }
        Change::SetMetadata { name, metadata } => {
            let old = dir
                .get(name)
                .ok_or_else(|| DirnodeError::NoSuchChild(normalize(name)))?;
            let md = update_metadata(Some(&old.metadata), Some(metadata), now);
            let child = finish_child(
                old.rw_uri().map(<[u8]>::to_vec),
                old.ro_uri().map(<[u8]>::to_vec),
                md,
            );
            dir.insert(name, child);
            Ok(None)
        }
        Change::Remove { name, must_exist } => match dir.remove(name) {
            Some(c) => Ok(Some(c)),
            None if *must_exist => Err(DirnodeError::NoSuchChild(normalize(name))),
            None => Ok(None),
        },
        Change::Rename {
            from,
            to,
            overwrite,
        } => {
            if normalize(from) == normalize(to) {
                // Tahoe: "redundant rename/relink"; moving onto itself must not delete it.
                return Ok(None);
            }
            if !dir.contains(from) {
                return Err(DirnodeError::NoSuchChild(normalize(from)));
            }
            if dir.contains(to) && !overwrite {
                return Err(DirnodeError::ExistingChild(normalize(to)));
            }
            let child = dir
                .remove(from)
                .ok_or_else(|| DirnodeError::NoSuchChild(normalize(from)))?;
            let md = update_metadata(dir.get(to).map(|c| &c.metadata), Some(&child.metadata), now);
            let moved = finish_child(
                child.rw_uri().map(<[u8]>::to_vec),
                child.ro_uri().map(<[u8]>::to_vec),
                md,
            );
            dir.insert(to, moved);
            Ok(None)
        }
    }
}

/// Names whose child differs between two snapshots (added, removed or changed).
fn changed_names(a: &Directory, b: &Directory) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, child) in a.iter() {
        if b.get(name) != Some(child) {
            out.insert(name.to_string());
        }
    }
    for (name, _) in b.iter() {
        if !a.contains(name) {
            out.insert(name.to_string());
        }
    }
    out
}

fn store_err(e: StoreError) -> DirnodeError {
    DirnodeError::Store(e.to_string())
}

/// A mutable directory over a [`DirectoryStore`].
pub struct Dirnode<S> {
    store: S,
    clock: Box<dyn Fn() -> f64 + Send + Sync>,
    max_attempts: usize,
}

fn system_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl<S: DirectoryStore> Dirnode<S> {
    /// A directory over `store`, timestamping with the system clock.
    pub fn new(store: S) -> Self {
        Dirnode {
            store,
            clock: Box::new(system_now),
            max_attempts: 10,
        }
    }

    /// Uses `clock` (float seconds since the epoch) for link timestamps.
    pub fn with_clock(mut self, clock: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Gives up after `n` lost races in one batch.
    pub fn with_max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn kind(&self) -> DirKind {
        DirKind::Mutable {
            writekey: self.store.writekey(),
        }
    }

    pub fn is_writeable(&self) -> bool {
        self.store.writekey().is_some()
    }

    fn read(&self) -> Result<(Vec<u8>, S::Version, Directory), DirnodeError> {
        let (body, version) = self.store.read().map_err(store_err)?;
        let dir = Directory::unpack(self.kind(), &body)?;
        Ok((body, version, dir))
    }

    /// The current children (write caps only with the writekey).
    pub fn list(&self) -> Result<Directory, DirnodeError> {
        Ok(self.read()?.2)
    }

    /// The child named `name`, if any.
    pub fn lookup(&self, name: &str) -> Result<Option<Child>, DirnodeError> {
        Ok(self.list()?.get(name).cloned())
    }

    /// Adds or replaces a child.
    pub fn set_child(
        &self,
        name: &str,
        rw_uri: Option<Vec<u8>>,
        ro_uri: Option<Vec<u8>>,
        metadata: Option<Metadata>,
        overwrite: bool,
    ) -> Result<(), DirnodeError> {
        self.apply(&[Change::Set {
            name: name.to_string(),
            rw_uri,
            ro_uri,
            metadata,
            overwrite,
        }])?
        .into_result()
        .map(|_| ())
    }

    /// Replaces a child's user metadata.
    pub fn set_metadata(&self, name: &str, metadata: Metadata) -> Result<(), DirnodeError> {
        self.apply(&[Change::SetMetadata {
            name: name.to_string(),
            metadata,
        }])?
        .into_result()
        .map(|_| ())
    }

    /// Removes a child that must exist and returns it.
    pub fn remove(&self, name: &str) -> Result<Child, DirnodeError> {
        let mut report = self
            .apply(&[Change::Remove {
                name: name.to_string(),
                must_exist: true,
            }])?
            .into_result()?;
        report
            .removed
            .remove(&0)
            .ok_or_else(|| DirnodeError::NoSuchChild(normalize(name)))
    }

    /// Renames a child within this directory in one rewrite.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), DirnodeError> {
        self.apply(&[Change::Rename {
            from: from.to_string(),
            to: to.to_string(),
            overwrite,
        }])?
        .into_result()
        .map(|_| ())
    }

    /// Applies `changes` in order and publishes them with one replace (see the module doc for
    /// races). Returns the report, whose `conflicts` lists changes dropped because another
    /// writer changed the same children.
    pub fn apply(&self, changes: &[Change]) -> Result<BatchReport, DirnodeError> {
        if !self.is_writeable() {
            return Err(DirnodeError::NotWriteable);
        }
        let (mut body, mut version, mut base) = self.read()?;
        let mut report = BatchReport::default();
        let mut dropped: BTreeSet<usize> = BTreeSet::new();
        // Children removed by changes found already applied after a conflict (see below).
        let mut settled: BTreeMap<usize, Child> = BTreeMap::new();
        for _ in 0..self.max_attempts {
            let now = (self.clock)();
            let mut dir = base.clone();
            let mut removed = BTreeMap::new();
            for (i, ch) in changes.iter().enumerate() {
                if dropped.contains(&i) {
                    continue;
                }
                if let Some(c) = apply_change(&mut dir, ch, now)? {
                    removed.insert(i, c);
                }
            }
            removed.extend(settled.iter().map(|(i, c)| (*i, c.clone())));
            report.removed = removed;
            let new_body = dir.pack()?;
            if new_body == body {
                report.published = false;
                return Ok(report);
            }
            report.attempts += 1;
            match self.store.replace(&version, new_body) {
                Ok(_) => {
                    report.published = true;
                    return Ok(report);
                }
                Err(StoreError::Conflict) => {
                    let (b, v, fresh) = self.read()?;
                    let changed = changed_names(&base, &fresh);
                    for (i, ch) in changes.iter().enumerate() {
                        if dropped.contains(&i) {
                            continue;
                        }
                        let names: Vec<String> = ch
                            .touched()
                            .into_iter()
                            .filter(|n| changed.contains(n))
                            .collect();
                        if names.is_empty() {
                            continue;
                        }
                        dropped.insert(i);
                        // A publish that reports a conflict may still have won on enough
                        // servers (two writers racing on a mutable file): when the fresh
                        // directory holds exactly what this change produces, it is done, not
                        // a conflict.
                        let mut ours = base.clone();
                        let done = apply_change(&mut ours, ch, now).is_ok()
                            && ch.touched().iter().all(|n| ours.get(n) == fresh.get(n));
                        if done {
                            if let Some(c) = report.removed.get(&i) {
                                settled.insert(i, c.clone());
                            }
                        } else {
                            report.conflicts.push(ChangeConflict { index: i, names });
                        }
                    }
                    body = b;
                    version = v;
                    base = fresh;
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(DirnodeError::TooManyRetries(self.max_attempts))
    }
}
