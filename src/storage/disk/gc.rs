//! Lease expiration and garbage collection (`storage/expirer.py`, `crawler.py`).
//!
//! A lease is expired under the configured mode:
//! - `age`: its age (now − (expiration − 31 days)) exceeds the override duration if one is
//!   set, else the lease is past its own expiration time;
//! - `cutoff-date`: it was granted or last renewed (expiration − 31 days) before the cutoff.
//!
//! Leases on a share type not selected for expiration never expire. With expiration enabled,
//! a pass removes expired leases, and deletes a share once it has lost its last lease (a share
//! that had no lease at all is left alone, as Tahoe does). A pass is incremental: each
//! [`DiskStore::gc_step`] call examines at most `max_buckets` buckets, in Tahoe's crawl order
//! (prefix directories sorted, then buckets sorted), resuming from a [`GcCursor`].

use std::fs;
use std::io;

use super::{is_shnum_name, remove_share_file, DiskStore, StoreError};
use crate::storage::container::immutable::ImmutableShare;
use crate::storage::container::lease::LeaseRecord;
use crate::storage::container::mutable::MutableShare;
use crate::storage::container::{detect_kind, ShareKind};
use crate::storage::{ShareNum, StorageIndex, LEASE_DURATION_SECS};
use crate::util::base32;

/// `expire.mode` and its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirationMode {
    /// `expire.mode = age`, with `expire.override_lease_duration` in seconds.
    Age {
        override_lease_duration: Option<u64>,
    },
    /// `expire.mode = cutoff-date`, with `expire.cutoff_date` as unix seconds.
    CutoffDate { cutoff: u64 },
}

/// `[storage]expire.*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpirationPolicy {
    /// `expire.enabled`: without it a pass only reports.
    pub enabled: bool,
    pub mode: ExpirationMode,
    /// `expire.immutable`.
    pub immutable: bool,
    /// `expire.mutable`.
    pub mutable: bool,
}

impl Default for ExpirationPolicy {
    fn default() -> Self {
        ExpirationPolicy {
            enabled: false,
            mode: ExpirationMode::Age {
                override_lease_duration: None,
            },
            immutable: true,
            mutable: true,
        }
    }
}

impl ExpirationPolicy {
    /// Whether a lease with this expiration time is expired at `now` on a share of `kind`.
    pub fn lease_expired(&self, kind: ShareKind, expiration: u32, now: u64) -> bool {
        let selected = match kind {
            ShareKind::Immutable => self.immutable,
            ShareKind::Mutable => self.mutable,
        };
        if !selected {
            return false;
        }
        let expiration = u64::from(expiration);
        let granted = expiration.saturating_sub(LEASE_DURATION_SECS);
        match self.mode {
            ExpirationMode::Age {
                override_lease_duration: Some(limit),
            } => now.saturating_sub(granted) > limit,
            ExpirationMode::Age {
                override_lease_duration: None,
            } => now > expiration,
            ExpirationMode::CutoffDate { cutoff } => granted < cutoff,
        }
    }
}

/// Where an incremental pass stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcCursor {
    /// Last bucket processed: (prefix, bucket name).
    last: Option<(String, String)>,
    /// Completed full passes.
    pub cycles_completed: u64,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub buckets_examined: usize,
    pub shares_examined: usize,
    pub leases_expired: usize,
    pub shares_deleted: usize,
    /// Shares that could not be parsed: (storage index in base32, share number).
    pub corrupt_shares: Vec<(String, ShareNum)>,
    /// This step reached the end of the share tree; the cursor starts over next time.
    pub cycle_finished: bool,
}

fn sorted_names(dir: &std::path::Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

impl DiskStore {
    /// Examines up to `max_buckets` buckets after `cursor`, expiring leases and deleting
    /// shares as the policy says. Call periodically; bounded work per call.
    pub fn gc_step(
        &self,
        cursor: &mut GcCursor,
        max_buckets: usize,
    ) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let prefixes: Vec<String> = sorted_names(&self.shares_dir)?
            .into_iter()
            .filter(|p| p.len() == 2 && p != "incoming")
            .collect();
        for prefix in prefixes {
            if let Some((lp, _)) = &cursor.last {
                if prefix < *lp {
                    continue;
                }
            }
            for bucket in sorted_names(&self.shares_dir.join(&prefix))? {
                if let Some((lp, lb)) = &cursor.last {
                    if prefix == *lp && bucket <= *lb {
                        continue;
                    }
                }
                if report.buckets_examined >= max_buckets {
                    return Ok(report);
                }
                if let Some(si) = base32::decode_array::<16>(&bucket) {
                    self.gc_bucket(&si, &mut report)?;
                }
                report.buckets_examined += 1;
                cursor.last = Some((prefix.clone(), bucket));
            }
        }
        cursor.last = None;
        cursor.cycles_completed += 1;
        report.cycle_finished = true;
        Ok(report)
    }

    fn gc_bucket(&self, si: &StorageIndex, report: &mut GcReport) -> Result<(), StoreError> {
        let _g = self.stripe(si);
        let now = self.now_secs();
        let policy = self.cfg.expiration;
        let bucket = self.bucket_dir(si);
        for name in sorted_names(&bucket)? {
            let Some(shnum) = is_shnum_name(&name) else {
                continue;
            };
            report.shares_examined += 1;
            let path = bucket.join(&name);
            match self.gc_share(&path, policy, now) {
                Ok((expired, delete)) => {
                    report.leases_expired += expired;
                    if delete {
                        remove_share_file(&path)?;
                        report.shares_deleted += 1;
                    }
                }
                Err(StoreError::Io(e)) => return Err(StoreError::Io(e)),
                Err(_) => report.corrupt_shares.push((super::si_b2a(si), shnum)),
            }
        }
        super::fsutil::rmdir_if_empty(&bucket);
        Ok(())
    }

    /// Returns (number of expired leases, whether the share should now be deleted).
    fn gc_share(
        &self,
        path: &std::path::Path,
        policy: ExpirationPolicy,
        now: u64,
    ) -> Result<(usize, bool), StoreError> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(policy.enabled)
            .open(path)?;
        let mut prefix = [0u8; 32];
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut prefix, 0)?;
        let kind = detect_kind(prefix.get(..n).unwrap_or_default())
            .ok_or(StoreError::WrongShareType(0))?;
        let expired = |l: &LeaseRecord| policy.lease_expired(kind, l.expiration, now);
        match kind {
            ShareKind::Mutable => {
                let mut share = MutableShare::open(file)?;
                let leases = share.leases()?;
                let n_expired = leases.iter().filter(|(_, l)| expired(l)).count();
                if !policy.enabled || n_expired == 0 {
                    return Ok((n_expired, false));
                }
                let left = share.retain_leases(|l| !expired(l))?;
                Ok((n_expired, left == 0))
            }
            ShareKind::Immutable => {
                let mut share = ImmutableShare::open(file)?;
                let leases = share.leases()?;
                let n_expired = leases.iter().filter(|l| expired(l)).count();
                if !policy.enabled || n_expired == 0 {
                    return Ok((n_expired, false));
                }
                if n_expired == leases.len() {
                    // The share goes: no need to rewrite its lease table first.
                    return Ok((n_expired, true));
                }
                share.retain_leases(|l| !expired(l))?;
                Ok((n_expired, false))
            }
        }
    }
}
