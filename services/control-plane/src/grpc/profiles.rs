//! `journeys.v1.ProfileService` over [`ProfileApi`]: conversion only.

use journeys_proto::convert::json::{json_to_struct, timestamp};
use journeys_proto::v1 as pb;
use journeys_proto::v1::profile_service_server::ProfileService;
use tonic::{Request, Response};

use super::Reply;
use super::instances::instance;
use crate::api::ProfileApi;

/// The tonic face of the profile service.
#[derive(Clone)]
pub struct ProfileGrpc {
    api: ProfileApi,
}

impl ProfileGrpc {
    pub fn new(api: ProfileApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl ProfileService for ProfileGrpc {
    async fn get_profile(&self, req: Request<pb::GetProfileRequest>) -> Reply<pb::Profile> {
        let req = req.into_inner();
        let view = self.api.get(&req.user_id, &req.anonymous_id).await?;
        Ok(Response::new(pb::Profile {
            user_id: view.user_id,
            traits: view
                .traits
                .map(|t| json_to_struct(&serde_json::Value::Object(t))),
            audiences: view.audiences,
            active_instances: view.active_instances.iter().map(instance).collect(),
            identities: view
                .identities
                .into_iter()
                .map(|i| pb::LinkedIdentity {
                    id: i.identity,
                    linked_at: Some(timestamp(i.linked_at)),
                    merged_at: i.merged_at.map(timestamp),
                })
                .collect(),
            refused_links: view
                .refused_links
                .into_iter()
                .map(|r| pb::RefusedLink {
                    id: r.identity,
                    profile_id: r.profile_id,
                    refused_profile_id: r.refused_profile_id,
                    refusals: r.refusals,
                    last_refused_at: Some(timestamp(r.refused_at)),
                })
                .collect(),
        }))
    }

    async fn delete_profile(
        &self,
        req: Request<pb::DeleteProfileRequest>,
    ) -> Reply<pb::DeleteProfileResponse> {
        let req = req.into_inner();
        let deleted = self
            .api
            .delete(&req.user_id, &req.anonymous_id, req.suppress)
            .await?;
        Ok(Response::new(pb::DeleteProfileResponse {
            user_id: deleted.user_id,
            deleted_at: Some(timestamp(deleted.deleted_at)),
            suppressed: deleted.suppressed,
        }))
    }
}
