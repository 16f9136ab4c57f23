//! What this engine knows of identity links, to route an event carrying a linked id straight to
//! its profile's lane. A shortcut only: an event routed to the linked id's lane is handed on
//! by that lane, which reads the link from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

/// Links remembered at most; the map starts over when full.
const MAX_LINKS: usize = 100_000;

/// [`LinkCache::unlinked`]: not known yet (the store not read).
const UNKNOWN: u8 = 0;
/// No link in the store when the engine started, and none since.
const NONE: u8 = 1;
/// Some id is, or may be, linked.
const SOME: u8 = 2;

/// Linked id -> its profile, for the links this engine made or saw.
#[derive(Debug, Default)]
pub(crate) struct LinkCache {
    links: Mutex<HashMap<String, String>>,
    /// [`UNKNOWN`], [`NONE`] or [`SOME`].
    state: AtomicU8,
}

impl LinkCache {
    /// Whether no id is linked anywhere: then every event is applied in the lane it was
    /// queued in (none is handed on), which lets the fairness watermark count an event as
    /// placed once queued (`Watermark::placed`). False until the store was read, and for
    /// good after the first link (made here or found by a lane).
    pub fn unlinked(&self) -> bool {
        self.state.load(Ordering::Acquire) == NONE
    }

    /// The store held no link when read at start (unless a link was seen meanwhile).
    pub fn none_stored(&self) {
        let _ = self
            .state
            .compare_exchange(UNKNOWN, NONE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// An id is, or is about to be, linked (an event links ids, or a lane hands an item on).
    pub fn linking(&self) {
        self.state.store(SOME, Ordering::Release);
    }

    /// The profile `identity` is known to be linked to.
    pub fn get(&self, identity: &str) -> Option<String> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identity)
            .cloned()
    }

    pub fn insert(&self, identity: String, profile_id: String) {
        self.linking();
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.len() >= MAX_LINKS {
            links.clear();
        }
        links.insert(identity, profile_id);
    }

    /// Forgets every link of or to the deleted profiles.
    pub fn forget(&self, profile_ids: &[&str]) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|identity, profile| {
            !profile_ids.contains(&identity.as_str()) && !profile_ids.contains(&profile.as_str())
        });
    }
}
