//! The bound on the event catalog: every accepted event records its name there, so a client
//! sending made-up names would grow it without end. This node admits names up to
//! [`EngineConfig::max_catalog_events`](crate::EngineConfig::max_catalog_events): names already
//! in the catalog keep being counted; a new name past the bound is not recorded (its events
//! are still applied), counted in `journeys_catalog_names_refused_total` and logged once.
//!
//! The names are read from the store once, by the first batch that records any; several nodes
//! each admit up to the bound, so the catalog may exceed it by what they admit at the same time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use journeys_store::{Store, StoreError};
use tokio::sync::Mutex;

#[derive(Debug)]
pub(crate) struct CatalogNames {
    max: usize,
    known: Mutex<Option<HashSet<String>>>,
    warned: AtomicBool,
}

impl CatalogNames {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            known: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    /// Keeps the entries of `seen` whose names may be recorded.
    ///
    /// # Errors
    /// When the catalog's names cannot be read (the batch is tried again).
    pub async fn admit<T>(
        &self,
        store: &Store,
        seen: &mut Vec<(String, T)>,
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut loaded = self.known.lock().await;
        let known = match &mut *loaded {
            Some(known) => known,
            None => {
                let names = store.catalog().list().await?;
                loaded.insert(names.into_iter().map(|e| e.name).collect())
            }
        };
        let mut refused = 0u64;
        seen.retain(|(name, _)| {
            if known.contains(name) {
                return true;
            }
            if known.len() < self.max {
                known.insert(name.clone());
                return true;
            }
            refused += 1;
            false
        });
        if refused > 0 {
            journeys_telemetry::metrics::metrics()
                .catalog_names_refused
                .add(refused);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max = self.max,
                    "the event catalog holds max_catalog_events names: new event names are no \
                     longer recorded (their events are still applied)"
                );
            }
        }
        Ok(())
    }
}
