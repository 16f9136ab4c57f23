//! `journeys.v1.AudienceService` over [`AudienceApi`]: conversion only.

use journeys_proto::convert::json::{opt_timestamp, timestamp};
use journeys_proto::v1 as pb;
use journeys_proto::v1::audience_service_server::AudienceService;
use journeys_store::AudienceRecord;
use tonic::{Request, Response};

use super::{Reply, count};
use crate::api::AudienceApi;
use crate::fields::page_size;

/// The tonic face of the audience service.
#[derive(Clone)]
pub struct AudienceGrpc {
    api: AudienceApi,
}

impl AudienceGrpc {
    pub fn new(api: AudienceApi) -> Self {
        Self { api }
    }
}

fn audience(a: &AudienceRecord) -> pb::Audience {
    pb::Audience {
        key: a.key.clone(),
        name: a.name.clone(),
        active: a.active,
        member_count: a.member_count,
        created_at: Some(timestamp(a.created_at)),
        archived_at: opt_timestamp(a.archived_at),
    }
}

#[tonic::async_trait]
impl AudienceService for AudienceGrpc {
    async fn create_audience(
        &self,
        req: Request<pb::CreateAudienceRequest>,
    ) -> Reply<pb::Audience> {
        let req = req.into_inner();
        let created = self.api.create(&req.key, &req.name).await?;
        Ok(Response::new(audience(&created)))
    }

    async fn get_audience(&self, req: Request<pb::GetAudienceRequest>) -> Reply<pb::Audience> {
        let found = self.api.get(&req.into_inner().key).await?;
        Ok(Response::new(audience(&found)))
    }

    async fn list_audiences(
        &self,
        req: Request<pb::ListAudiencesRequest>,
    ) -> Reply<pb::ListAudiencesResponse> {
        let req = req.into_inner();
        let page = self
            .api
            .list(page_size(req.page_size)?, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListAudiencesResponse {
            audiences: page.items.iter().map(audience).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn archive_audience(
        &self,
        req: Request<pb::ArchiveAudienceRequest>,
    ) -> Reply<pb::Audience> {
        let archived = self.api.archive(&req.into_inner().key).await?;
        Ok(Response::new(audience(&archived)))
    }

    async fn add_members(
        &self,
        req: Request<pb::AddMembersRequest>,
    ) -> Reply<pb::AddMembersResponse> {
        let req = req.into_inner();
        let added = self.api.add_members(&req.key, &req.user_ids).await?;
        Ok(Response::new(pb::AddMembersResponse {
            added: count(added),
        }))
    }

    async fn remove_members(
        &self,
        req: Request<pb::RemoveMembersRequest>,
    ) -> Reply<pb::RemoveMembersResponse> {
        let req = req.into_inner();
        let removed = self.api.remove_members(&req.key, &req.user_ids).await?;
        Ok(Response::new(pb::RemoveMembersResponse {
            removed: count(removed),
        }))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let req = req.into_inner();
        let page = self
            .api
            .members(&req.key, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            user_ids: page.items,
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn check_membership(
        &self,
        req: Request<pb::CheckMembershipRequest>,
    ) -> Reply<pb::CheckMembershipResponse> {
        let req = req.into_inner();
        let member = self.api.is_member(&req.key, &req.user_id).await?;
        Ok(Response::new(pb::CheckMembershipResponse { member }))
    }
}
