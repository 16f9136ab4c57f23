//! What this engine knows of identity links, to route an event carrying a linked id straight to
//! its profile's lane. A shortcut only: an event routed to the linked id's lane is handed on
//! by that lane, which reads the link from the store.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Links remembered at most; the map starts over when full.
const MAX_LINKS: usize = 100_000;

/// Linked id -> its profile, for the links this engine made or saw.
#[derive(Debug, Default)]
pub(crate) struct LinkCache {
    links: Mutex<HashMap<String, String>>,
}

impl LinkCache {
    /// The profile `identity` is known to be linked to.
    pub fn get(&self, identity: &str) -> Option<String> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identity)
            .cloned()
    }

    pub fn insert(&self, identity: String, profile_id: String) {
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
