//! The published-journey cache: every published and archived journey, decoded and indexed by
//! the event names it reacts to, plus the keys of the active audiences (for trait sync).
//!
//! Lanes take an `Arc` of the current [`Snapshot`] per batch, so a rebuild never blocks them.
//! A poller compares the store's cheap `published_stamp()` every refresh interval and
//! rebuilds on change, so a publish or archive takes effect within about one interval.
//!
//! Archived journeys stay loaded (marked as such): their active instances keep draining —
//! hold events, exit rules and timers still apply — but they are never entered.
//!
//! Active audience keys are reloaded with every rebuild and otherwise every
//! [`AUDIENCE_REFRESH_EVERY`] polls: the store's audience listing also counts members, which is
//! too heavy to run twice a second against large audiences.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use journeys_core::index::JourneyIndex;
use journeys_core::machine::Journey;
use journeys_store::{JourneyRecord, JourneyState, MAX_PAGE_SIZE, Store, StoreError};

/// The audience list (whose listing also counts members) is reloaded on every this many
/// polls, and whenever the journeys change.
pub(crate) const AUDIENCE_REFRESH_EVERY: u32 = 10;

/// What the store's journeys looked like at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub index: JourneyIndex,
    /// Ids of archived journeys: loaded for draining, never entered.
    pub archived: HashSet<String>,
    /// Published journeys that replaced another with `exclude_active`: id → the replaced id.
    pub excluded_while_active_in: HashMap<String, String>,
    /// Keys of active audiences.
    pub audiences: HashSet<String>,
}

type Stamp = (i64, Option<DateTime<Utc>>);

#[derive(Debug, Default)]
struct Loaded {
    snapshot: Option<Arc<Snapshot>>,
    stamp: Option<Stamp>,
    /// When the newest read of the stamp that found the snapshot current (or rebuilt it)
    /// started: whatever the store had committed by then is in the snapshot.
    checked: Option<Instant>,
}

/// The cache shared by the lanes and its poller.
#[derive(Debug)]
pub(crate) struct JourneyCache {
    store: Store,
    loaded: RwLock<Loaded>,
    /// Serializes loads so that concurrent callers do not each rebuild.
    load: tokio::sync::Mutex<u32>,
}

impl JourneyCache {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            loaded: RwLock::new(Loaded::default()),
            load: tokio::sync::Mutex::new(0),
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot
            .clone()
    }

    /// The current snapshot, loading it first if nothing was loaded yet.
    pub async fn get(&self) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(snapshot) = self.current() {
            return Ok(snapshot);
        }
        let _guard = self.load.lock().await;
        if let Some(snapshot) = self.current() {
            return Ok(snapshot);
        }
        self.rebuild().await
    }

    /// Rebuilds unconditionally (for tests and operator actions that must see the newest
    /// state).
    pub async fn reload(&self) -> Result<Arc<Snapshot>, StoreError> {
        let _guard = self.load.lock().await;
        self.rebuild().await
    }

    /// Rebuilds when the journeys changed since the last load (one cheap read of the store's
    /// stamp otherwise), and returns the current snapshot: for a batch that met an instance of a
    /// journey this node has not loaded yet (published through another node since its last
    /// poll).
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, StoreError> {
        let _guard = self.load.lock().await;
        match self.unchanged().await? {
            Some(current) => Ok(current),
            None => self.rebuild().await,
        }
    }

    /// A snapshot holding every journey published, archived or changed before `since`
    /// (through any node): the current one when a check of the store's stamp started after
    /// `since`, otherwise after one more check (and a rebuild when the stamp changed). For
    /// entries read from the partition log at `since`: acknowledged after a publish returned,
    /// they must meet the published journey.
    pub async fn fresh_since(&self, since: Instant) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(current) = self.checked_since(since) {
            return Ok(current);
        }
        let _guard = self.load.lock().await;
        // Another caller may have checked while this one waited for the lock.
        if let Some(current) = self.checked_since(since) {
            return Ok(current);
        }
        match self.unchanged().await? {
            Some(current) => Ok(current),
            None => self.rebuild().await,
        }
    }

    fn checked_since(&self, since: Instant) -> Option<Arc<Snapshot>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        loaded
            .snapshot
            .clone()
            .filter(|_| loaded.checked.is_some_and(|checked| checked >= since))
    }

    /// The loaded snapshot when the store's journeys have not changed since it was loaded (one
    /// read of the stamp); `None` when nothing is loaded or they changed. The caller holds the
    /// load lock.
    async fn unchanged(&self) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let started = Instant::now();
        let stamp = self.store.journeys().published_stamp().await?;
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if loaded.snapshot.is_none() || loaded.stamp != Some(stamp) {
            return Ok(None);
        }
        loaded.checked = Some(started);
        Ok(loaded.snapshot.clone())
    }

    /// One poll: rebuilds when the journeys changed since the last load; reloads only the
    /// audiences every [`AUDIENCE_REFRESH_EVERY`] polls otherwise.
    pub async fn poll(&self) -> Result<(), StoreError> {
        let mut polls = self.load.lock().await;
        *polls = polls.wrapping_add(1);
        match self.unchanged().await? {
            Some(previous) => {
                if *polls % AUDIENCE_REFRESH_EVERY == 0 {
                    let audiences = self.active_audiences().await?;
                    if audiences != previous.audiences {
                        let snapshot = Snapshot {
                            index: previous.index.clone(),
                            archived: previous.archived.clone(),
                            excluded_while_active_in: previous.excluded_while_active_in.clone(),
                            audiences,
                        };
                        let mut loaded =
                            self.loaded.write().unwrap_or_else(PoisonError::into_inner);
                        loaded.snapshot = Some(Arc::new(snapshot));
                    }
                }
                Ok(())
            }
            None => self.rebuild().await.map(drop),
        }
    }

    /// Loads everything; the caller holds the load lock.
    async fn rebuild(&self) -> Result<Arc<Snapshot>, StoreError> {
        // The stamp is read before the journeys: a change in between shows up as a newer
        // stamp at the next poll, never as a missed change.
        let started = Instant::now();
        let stamp = self.store.journeys().published_stamp().await?;
        let mut journeys = Vec::new();
        let mut archived = HashSet::new();
        let mut excluded_while_active_in = HashMap::new();
        for state in [JourneyState::Published, JourneyState::Archived] {
            for record in self.journeys_in(state).await? {
                let Some(journey) = decode(&record) else {
                    continue;
                };
                if state == JourneyState::Archived {
                    archived.insert(record.id.clone());
                }
                if let (Some(replaced), true) = (&record.replaces, record.replace_excludes_active) {
                    excluded_while_active_in.insert(record.id.clone(), replaced.clone());
                }
                journeys.push(journey);
            }
        }
        let audiences = self.active_audiences().await?;
        let snapshot = Arc::new(Snapshot {
            index: JourneyIndex::new(journeys),
            archived,
            excluded_while_active_in,
            audiences,
        });
        tracing::debug!(
            journeys = snapshot.index.len(),
            archived = snapshot.archived.len(),
            audiences = snapshot.audiences.len(),
            "journey cache rebuilt"
        );
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        loaded.snapshot = Some(Arc::clone(&snapshot));
        loaded.stamp = Some(stamp);
        loaded.checked = Some(started);
        Ok(snapshot)
    }

    async fn journeys_in(&self, state: JourneyState) -> Result<Vec<JourneyRecord>, StoreError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .journeys()
                .list(Some(state), MAX_PAGE_SIZE, token.as_deref())
                .await?;
            all.extend(page.items);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn active_audiences(&self) -> Result<HashSet<String>, StoreError> {
        let mut keys = HashSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .audiences()
                .list(MAX_PAGE_SIZE, token.as_deref())
                .await?;
            keys.extend(page.items.into_iter().filter(|a| a.active).map(|a| a.key));
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

/// The journey of a stored record, or `None` (logged) when its definition does not decode:
/// one bad row must not stop every other journey.
fn decode(record: &JourneyRecord) -> Option<Journey> {
    match record.journey() {
        Ok(journey) => Some(journey),
        Err(err) => {
            tracing::error!(journey_id = %record.id, error = %err, "stored journey definition does not decode; journey not loaded");
            None
        }
    }
}
