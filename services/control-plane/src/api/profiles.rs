//! [`ProfileApi`]: what the store knows about one profile.

use chrono::{DateTime, Utc};
use journeys_engine::Engine;
use journeys_store::{
    IdentityRecord, InstanceFilter, InstanceRecord, InstanceState, RefusalRecord, Store, StoreError,
};
use serde_json::{Map, Value};

use crate::error::{Result, ServiceError};

/// Active instances listed per profile (SPEC: at most 25 may exist).
const MAX_ACTIVE_LISTED: u32 = 100;

/// A profile's traits, audiences and active instances.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub user_id: String,
    /// `None` when no trait was ever stored.
    pub traits: Option<Map<String, Value>>,
    pub audiences: Vec<String>,
    pub active_instances: Vec<InstanceRecord>,
    /// Ids linked to the profile.
    pub identities: Vec<IdentityRecord>,
    /// Links refused because the id belonged to another profile.
    pub refused_links: Vec<RefusalRecord>,
}

/// A deletion as applied.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub user_id: String,
    pub deleted_at: DateTime<Utc>,
    pub suppressed: bool,
}

/// Profile reads over the store's `Profiles`, `Audiences` and `Instances` repositories, and
/// deletions through the engine (the owner of the profile's partition).
#[derive(Clone)]
pub struct ProfileApi {
    store: Store,
    engine: Engine,
}

impl ProfileApi {
    pub fn new(store: Store, engine: Engine) -> Self {
        Self { store, engine }
    }

    /// Deletes the profile of `user_id` (else `anonymous_id`: exactly one is given).
    pub async fn delete(
        &self,
        user_id: &str,
        anonymous_id: &str,
        suppress: bool,
    ) -> Result<Deleted> {
        let (field, id) = match (user_id.is_empty(), anonymous_id.is_empty()) {
            (false, true) => ("user_id", user_id),
            (true, false) => ("anonymous_id", anonymous_id),
            (true, true) => {
                return Err(ServiceError::invalid_field(
                    "user_id",
                    "required: the user id of the profile to delete (or anonymous_id)",
                ));
            }
            (false, false) => {
                return Err(ServiceError::invalid_field(
                    "anonymous_id",
                    "give user_id or anonymous_id, not both: a profile is keyed by its user id \
                     when it has one",
                ));
            }
        };
        if id.chars().count() > journeys_store::MAX_KEY_CHARS {
            return Err(ServiceError::invalid_field(
                field,
                format!(
                    "longer than {} characters: no profile has such an id",
                    journeys_store::MAX_KEY_CHARS
                ),
            ));
        }
        // An id linked to a profile deletes that profile.
        let id = self.store.identities().resolve(id).await?;
        self.engine.delete_profile(&id, suppress).await?;
        let record = self.store.profiles().get(&id).await?;
        Ok(Deleted {
            user_id: record.user_id,
            deleted_at: record.deleted_at.unwrap_or_else(Utc::now),
            suppressed: record.suppressed,
        })
    }

    /// The profile of `user_id` (else `anonymous_id`), or of the profile that id is linked
    /// to; not found when the store knows nothing about it.
    pub async fn get(&self, user_id: &str, anonymous_id: &str) -> Result<ProfileView> {
        let id = match (user_id.is_empty(), anonymous_id.is_empty()) {
            (false, _) => user_id,
            (true, false) => anonymous_id,
            (true, true) => {
                return Err(ServiceError::invalid_field(
                    "user_id",
                    "required: a user id or an anonymous id (anonymous_id)",
                ));
            }
        };
        let user_id = self.store.identities().resolve(id).await?;
        let traits = match self.store.profiles().get(&user_id).await {
            Ok(p) if p.deleted_at.is_some() && p.traits.is_empty() => {
                return Err(ServiceError::NotFound(format!(
                    "profile '{user_id}' was deleted"
                )));
            }
            Ok(p) => Some(p.traits),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let audiences = self.store.audiences().audiences_of(&user_id).await?;
        let filter = InstanceFilter {
            profile_id: Some(user_id.clone()),
            state: Some(InstanceState::Active),
            ..InstanceFilter::default()
        };
        let active = self
            .store
            .instances()
            .list(&filter, MAX_ACTIVE_LISTED, None)
            .await?;
        let identities = self.store.identities().of_profile(&user_id).await?;
        let refused_links = self.store.identities().refusals_of(&user_id).await?;
        if traits.is_none()
            && audiences.is_empty()
            && active.items.is_empty()
            && identities.is_empty()
            && refused_links.is_empty()
        {
            return Err(ServiceError::NotFound(format!(
                "profile '{user_id}' not found"
            )));
        }
        Ok(ProfileView {
            user_id,
            traits,
            audiences,
            active_instances: active.items,
            identities,
            refused_links,
        })
    }
}
