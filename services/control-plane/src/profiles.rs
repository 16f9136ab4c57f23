//! `journeys.v1.ProfileService`: a profile's traits, audiences and active instances.

use journeys_proto::v1 as pb;
use journeys_proto::v1::profile_service_server::ProfileService;
use journeys_runtime::error::ApiError;
use journeys_store::{InstanceFilter, InstanceState, Store, StoreError};
use tonic::{Request, Response, Status};

use crate::convert::json::json_to_struct;
use crate::{errors, instances};

/// Active instances listed per profile (SPEC: at most 25 may exist).
const MAX_ACTIVE_LISTED: u32 = 100;

#[derive(Clone)]
pub struct Profiles {
    store: Store,
}

type Reply<T> = Result<Response<T>, Status>;

impl Profiles {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl ProfileService for Profiles {
    async fn get_profile(&self, req: Request<pb::GetProfileRequest>) -> Reply<pb::Profile> {
        let user_id = req.into_inner().user_id;
        if user_id.is_empty() {
            return Err(ApiError::invalid_field("user_id", "required").into());
        }
        let traits = match self.store.profiles().get(&user_id).await {
            Ok(p) => Some(serde_json::Value::Object(p.traits)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(errors::store(e).into()),
        };
        let audiences = self
            .store
            .audiences()
            .audiences_of(&user_id)
            .await
            .map_err(errors::store)?;
        let filter = InstanceFilter {
            profile_id: Some(user_id.clone()),
            state: Some(InstanceState::Active),
            ..InstanceFilter::default()
        };
        let active = self
            .store
            .instances()
            .list(&filter, MAX_ACTIVE_LISTED, None)
            .await
            .map_err(errors::store)?;
        if traits.is_none() && audiences.is_empty() && active.items.is_empty() {
            return Err(ApiError::NotFound(format!("profile '{user_id}' not found")).into());
        }
        Ok(Response::new(pb::Profile {
            user_id,
            traits: traits.as_ref().map(json_to_struct),
            audiences,
            active_instances: active.items.iter().map(instances::to_proto).collect(),
        }))
    }
}
