//! [`ProfileApi`]: what the store knows about one profile.

use journeys_store::{InstanceFilter, InstanceRecord, InstanceState, Store, StoreError};
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
}

/// Profile reads over the store's `Profiles`, `Audiences` and `Instances` repositories.
#[derive(Clone)]
pub struct ProfileApi {
    store: Store,
}

impl ProfileApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The profile `user_id`; not found when the store knows nothing about it.
    pub async fn get(&self, user_id: String) -> Result<ProfileView> {
        if user_id.is_empty() {
            return Err(ServiceError::invalid_field("user_id", "required"));
        }
        let traits = match self.store.profiles().get(&user_id).await {
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
        if traits.is_none() && audiences.is_empty() && active.items.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "profile '{user_id}' not found"
            )));
        }
        Ok(ProfileView {
            user_id,
            traits,
            audiences,
            active_instances: active.items,
        })
    }
}
