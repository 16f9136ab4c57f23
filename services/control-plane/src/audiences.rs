//! `journeys.v1.AudienceService`: named, keyed sets of profiles.

use chrono::Utc;
use journeys_core::Problem;
use journeys_proto::v1 as pb;
use journeys_proto::v1::audience_service_server::AudienceService;
use journeys_runtime::error::ApiError;
use journeys_store::{AudienceRecord, Store, StoreError};
use tonic::{Request, Response, Status};

use crate::convert::json::{opt_timestamp, timestamp};
use crate::{errors, fields};

/// Most user ids accepted by one AddMembers / RemoveMembers call.
pub const MAX_MEMBERS_PER_CALL: usize = 10_000;

#[derive(Clone)]
pub struct Audiences {
    store: Store,
}

type Reply<T> = Result<Response<T>, Status>;

/// Audience keys double as boolean trait names, so they follow the step-key alphabet.
fn check_key(key: &str, problems: &mut Vec<Problem>) {
    if !journeys_core::validate::is_valid_step_key(key) {
        problems.push(Problem::new(
            "key",
            format!("'{key}' is not a valid audience key: use 1-64 of a-z, 0-9 and '_'"),
        ));
    }
}

fn check_user_ids(user_ids: &[String]) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    if user_ids.is_empty() {
        problems.push(Problem::new("user_ids", "at least one user id is required"));
    }
    if user_ids.len() > MAX_MEMBERS_PER_CALL {
        problems.push(Problem::new(
            "user_ids",
            format!("at most {MAX_MEMBERS_PER_CALL} per call"),
        ));
    }
    for (i, id) in user_ids.iter().enumerate() {
        if id.is_empty() {
            problems.push(Problem::new(format!("user_ids[{i}]"), "must not be empty"));
        }
    }
    errors::check("request", &problems)
}

fn to_proto(a: &AudienceRecord) -> pb::Audience {
    pb::Audience {
        key: a.key.clone(),
        name: a.name.clone(),
        active: a.active,
        member_count: a.member_count,
        created_at: Some(timestamp(a.created_at)),
        archived_at: opt_timestamp(a.archived_at),
    }
}

impl Audiences {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn active(&self, key: &str) -> Result<AudienceRecord, ApiError> {
        let audience = self.get(key).await?;
        if !audience.active {
            return Err(ApiError::FailedPrecondition(format!(
                "audience '{key}' is archived"
            )));
        }
        Ok(audience)
    }

    async fn get(&self, key: &str) -> Result<AudienceRecord, ApiError> {
        if key.is_empty() {
            return Err(ApiError::invalid_field("key", "required"));
        }
        self.store.audiences().get(key).await.map_err(errors::store)
    }
}

#[tonic::async_trait]
impl AudienceService for Audiences {
    async fn create_audience(
        &self,
        req: Request<pb::CreateAudienceRequest>,
    ) -> Reply<pb::Audience> {
        let req = req.into_inner();
        let mut problems = Vec::new();
        check_key(&req.key, &mut problems);
        fields::check_name("name", &req.name, &mut problems);
        errors::check("audience", &problems)?;
        match self
            .store
            .audiences()
            .insert(&req.key, &req.name, Utc::now())
            .await
        {
            Ok(a) => Ok(Response::new(to_proto(&a))),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::AlreadyExists(format!(
                "an audience with key '{}' already exists",
                req.key
            ))
            .into()),
            Err(e) => Err(errors::store(e).into()),
        }
    }

    async fn get_audience(&self, req: Request<pb::GetAudienceRequest>) -> Reply<pb::Audience> {
        Ok(Response::new(to_proto(
            &self.get(&req.into_inner().key).await?,
        )))
    }

    async fn list_audiences(
        &self,
        req: Request<pb::ListAudiencesRequest>,
    ) -> Reply<pb::ListAudiencesResponse> {
        let req = req.into_inner();
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let page = self
            .store
            .audiences()
            .list(size, Some(&req.page_token))
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::ListAudiencesResponse {
            audiences: page.items.iter().map(to_proto).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn archive_audience(
        &self,
        req: Request<pb::ArchiveAudienceRequest>,
    ) -> Reply<pb::Audience> {
        let key = req.into_inner().key;
        self.get(&key).await?;
        let a = self
            .store
            .audiences()
            .archive(&key, Utc::now())
            .await
            .map_err(errors::store)?;
        Ok(Response::new(to_proto(&a)))
    }

    async fn add_members(
        &self,
        req: Request<pb::AddMembersRequest>,
    ) -> Reply<pb::AddMembersResponse> {
        let req = req.into_inner();
        self.active(&req.key).await?;
        check_user_ids(&req.user_ids)?;
        let added = self
            .store
            .audiences()
            .add_members(&req.key, &req.user_ids, Utc::now())
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::AddMembersResponse {
            added: i32::try_from(added).unwrap_or(i32::MAX),
        }))
    }

    async fn remove_members(
        &self,
        req: Request<pb::RemoveMembersRequest>,
    ) -> Reply<pb::RemoveMembersResponse> {
        let req = req.into_inner();
        self.get(&req.key).await?;
        check_user_ids(&req.user_ids)?;
        let removed = self
            .store
            .audiences()
            .remove_members(&req.key, &req.user_ids)
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::RemoveMembersResponse {
            removed: i32::try_from(removed).unwrap_or(i32::MAX),
        }))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let req = req.into_inner();
        self.get(&req.key).await?;
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let page = self
            .store
            .audiences()
            .list_members(&req.key, size, Some(&req.page_token))
            .await
            .map_err(errors::store)?;
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
        self.get(&req.key).await?;
        if req.user_id.is_empty() {
            return Err(ApiError::invalid_field("user_id", "required").into());
        }
        let member = self
            .store
            .audiences()
            .is_member(&req.key, &req.user_id)
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::CheckMembershipResponse { member }))
    }
}
