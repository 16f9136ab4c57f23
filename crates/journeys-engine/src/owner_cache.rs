//! The owner's profile cache (SCALE-OUT.md §2): one per lane, so no lock. While this node holds
//! a partition, its profiles' state in memory is authoritative: a warm event needs no store
//! read. Each entry remembers the epoch of its partition when it was cached; after the
//! partition was lost and taken back (a new epoch) the entry is stale and read again. Bounded
//! by profile count, least recently used out, so memory does not grow with the number of
//! profiles or waiting instances beyond the bound.

use chrono::{DateTime, Utc};
use hashlink::LruCache;

use crate::profile::ProfileWork;

struct Entry {
    epoch: i64,
    work: ProfileWork,
}

pub(crate) struct ProfileCache {
    entries: Option<LruCache<String, Entry>>,
}

impl ProfileCache {
    /// A cache of at most `capacity` profiles (`0`: none kept).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| LruCache::new(capacity)),
        }
    }

    /// Takes the profile out if it was cached under `epoch` (a stale entry is dropped).
    pub fn take(&mut self, profile_id: &str, epoch: i64) -> Option<ProfileWork> {
        let entries = self.entries.as_mut()?;
        let entry = entries.remove(profile_id)?;
        (entry.epoch == epoch).then_some(entry.work)
    }

    /// Keeps the profile as committed under `epoch`.
    pub fn put(&mut self, profile_id: String, epoch: i64, work: ProfileWork) {
        if let Some(entries) = self.entries.as_mut() {
            entries.insert(profile_id, Entry { epoch, work });
        }
    }

    /// Drops the profile (its state in the store may differ from what was cached).
    pub fn forget(&mut self, profile_id: &str) {
        if let Some(entries) = self.entries.as_mut() {
            entries.remove(profile_id);
        }
    }
}

/// The `messageId`s an owner lane committed, with when: a resent event is known to be a
/// duplicate without a store read.
pub(crate) struct RecentIds {
    entries: Option<LruCache<String, DateTime<Utc>>>,
}

impl RecentIds {
    /// At most `capacity` ids (`0`: none kept, and the store is always read).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| LruCache::new(capacity)),
        }
    }

    /// Whether ids are kept at all (else the store must be read).
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// Whether `message_id` was committed at or after `since`.
    pub fn seen_since(&mut self, message_id: &str, since: DateTime<Utc>) -> bool {
        self.entries
            .as_mut()
            .and_then(|entries| entries.get(message_id))
            .is_some_and(|at| *at >= since)
    }

    /// Remembers ids committed at `at`.
    pub fn remember<'a>(&mut self, ids: impl Iterator<Item = &'a (String, DateTime<Utc>)>) {
        if let Some(entries) = self.entries.as_mut() {
            for (id, at) in ids {
                entries.insert(id.clone(), *at);
            }
        }
    }
}
