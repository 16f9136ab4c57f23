//! `journeys.v1.InstanceService`: journey instances and their timelines.

use journeys_proto::v1 as pb;
use journeys_proto::v1::instance_service_server::InstanceService;
use journeys_runtime::error::ApiError;
use journeys_store::{InstanceFilter, InstanceRecord, InstanceState, Store, TimelineRecord};
use tonic::{Request, Response, Status};

use crate::convert::json::{json_to_struct, opt_timestamp, timestamp};
use journeys_core::machine::ExitReason;
use journeys_engine::TerminateOutcome;

use crate::{Deps, errors, fields};

#[derive(Clone)]
pub struct Instances {
    store: Store,
    deps: Deps,
}

type Reply<T> = Result<Response<T>, Status>;

fn state(s: InstanceState) -> pb::InstanceState {
    match s {
        InstanceState::Active => pb::InstanceState::Active,
        InstanceState::Completed => pb::InstanceState::Completed,
        InstanceState::Exited => pb::InstanceState::Exited,
        InstanceState::Failed => pb::InstanceState::Failed,
    }
}

/// An instance without its timeline (list calls).
pub fn to_proto(i: &InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: i.id.clone(),
        journey_id: i.journey_id.clone(),
        journey_revision: i.journey_revision,
        user_id: i.profile_id.clone(),
        unique_value: i.unique_value.clone().unwrap_or_default(),
        state: state(i.state) as i32,
        current_step: i.current_step.clone().unwrap_or_default(),
        waiting_event: i.waiting_event.clone().unwrap_or_default(),
        context: Some(json_to_struct(&i.context)),
        entered_at: Some(timestamp(i.entered_at)),
        updated_at: Some(timestamp(i.updated_at)),
        ended_at: opt_timestamp(i.ended_at),
        timeline: Vec::new(),
    }
}

fn timeline_entry(t: &TimelineRecord) -> pb::TimelineEntry {
    pb::TimelineEntry {
        at: Some(timestamp(t.at)),
        step_key: t.step_key.clone(),
        kind: t.kind.clone(),
        cause: t.cause.clone(),
        detail: Some(json_to_struct(&t.detail)),
    }
}

impl Instances {
    pub fn new(deps: Deps) -> Self {
        Self {
            store: deps.store.clone(),
            deps,
        }
    }

    async fn detail(&self, id: &str) -> Result<pb::Instance, ApiError> {
        let detail = self
            .store
            .instances()
            .get(id)
            .await
            .map_err(errors::store)?;
        let mut out = to_proto(&detail.instance);
        out.timeline = detail.timeline.iter().map(timeline_entry).collect();
        Ok(out)
    }
}

#[tonic::async_trait]
impl InstanceService for Instances {
    async fn list_instances(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let req = req.into_inner();
        let state = match pb::InstanceState::try_from(req.state) {
            Ok(pb::InstanceState::Unspecified) => None,
            Ok(pb::InstanceState::Active) => Some(InstanceState::Active),
            Ok(pb::InstanceState::Completed) => Some(InstanceState::Completed),
            Ok(pb::InstanceState::Exited) => Some(InstanceState::Exited),
            Ok(pb::InstanceState::Failed) => Some(InstanceState::Failed),
            Err(_) => return Err(ApiError::invalid_field("state", "unknown instance state").into()),
        };
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let filter = InstanceFilter {
            journey_id: Some(req.journey_id).filter(|s| !s.is_empty()),
            profile_id: Some(req.user_id).filter(|s| !s.is_empty()),
            state,
        };
        let page = self
            .store
            .instances()
            .list(&filter, size, Some(&req.page_token))
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: page.items.iter().map(to_proto).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> Reply<pb::Instance> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(ApiError::invalid_field("id", "required").into());
        }
        Ok(Response::new(self.detail(&id).await?))
    }

    async fn exit_instance(&self, req: Request<pb::ExitInstanceRequest>) -> Reply<pb::Instance> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(ApiError::invalid_field("id", "required").into());
        }
        match self
            .deps
            .engine
            .terminate_instance(&id, ExitReason::Operator)
            .await
            .map_err(errors::engine_error)?
        {
            TerminateOutcome::Exited => {}
            TerminateOutcome::NotFound => {
                return Err(ApiError::NotFound(format!("instance '{id}' not found")).into());
            }
            TerminateOutcome::NotActive => {
                return Err(ApiError::FailedPrecondition(format!(
                    "instance '{id}' has already ended"
                ))
                .into());
            }
        }
        Ok(Response::new(self.detail(&id).await?))
    }
}
