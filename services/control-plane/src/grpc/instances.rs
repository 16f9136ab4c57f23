//! `journeys.v1.InstanceService` over [`InstanceApi`]: conversion only.

use journeys_proto::convert::json::{json_to_struct, opt_timestamp, timestamp};
use journeys_proto::v1 as pb;
use journeys_proto::v1::instance_service_server::InstanceService;
use journeys_store::{
    InstanceDetail, InstanceFilter, InstanceRecord, InstanceState, OutboxRecord, TimelineRecord,
};
use tonic::{Request, Response};

use super::{Reply, page_size};
use crate::api::InstanceApi;
use crate::error::{Result, ServiceError};

/// The tonic face of the instance service.
#[derive(Clone)]
pub struct InstanceGrpc {
    api: InstanceApi,
}

impl InstanceGrpc {
    pub fn new(api: InstanceApi) -> Self {
        Self { api }
    }
}

fn state(s: InstanceState) -> pb::InstanceState {
    match s {
        InstanceState::Active => pb::InstanceState::Active,
        InstanceState::Completed => pb::InstanceState::Completed,
        InstanceState::Exited => pb::InstanceState::Exited,
        InstanceState::Failed => pb::InstanceState::Failed,
    }
}

fn state_filter(state: i32) -> Result<Option<InstanceState>> {
    match pb::InstanceState::try_from(state) {
        Ok(pb::InstanceState::Unspecified) => Ok(None),
        Ok(pb::InstanceState::Active) => Ok(Some(InstanceState::Active)),
        Ok(pb::InstanceState::Completed) => Ok(Some(InstanceState::Completed)),
        Ok(pb::InstanceState::Exited) => Ok(Some(InstanceState::Exited)),
        Ok(pb::InstanceState::Failed) => Ok(Some(InstanceState::Failed)),
        Err(_) => Err(ServiceError::invalid_field(
            "state",
            "unknown instance state",
        )),
    }
}

/// An instance without its timeline (list calls).
pub fn instance(i: &InstanceRecord) -> pb::Instance {
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
        sends: Vec::new(),
    }
}

fn send(r: &OutboxRecord) -> pb::InstanceSend {
    pb::InstanceSend {
        id: r.id.clone(),
        step_key: r.step_key.clone(),
        destination_id: r.destination_id.clone(),
        message_id: r.message_id.clone(),
        status: r.status.as_str().to_owned(),
        attempts: r.attempts,
        payload: Some(json_to_struct(&r.payload)),
        last_error: r.last_error.clone().unwrap_or_default(),
        sent_at: opt_timestamp(r.sent_at),
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

fn detail(d: &InstanceDetail) -> pb::Instance {
    let mut out = instance(&d.instance);
    out.timeline = d.timeline.iter().map(timeline_entry).collect();
    out.sends = d.sends.iter().map(send).collect();
    out
}

#[tonic::async_trait]
impl InstanceService for InstanceGrpc {
    async fn list_instances(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let req = req.into_inner();
        let state = state_filter(req.state)?;
        let size = page_size(req.page_size)?;
        let filter = InstanceFilter {
            journey_id: Some(req.journey_id).filter(|s| !s.is_empty()),
            profile_id: Some(req.user_id).filter(|s| !s.is_empty()),
            state,
        };
        let page = self.api.list(&filter, size, &req.page_token).await?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: page.items.iter().map(instance).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> Reply<pb::Instance> {
        let found = self.api.get(&req.into_inner().id).await?;
        Ok(Response::new(detail(&found)))
    }

    async fn exit_instance(&self, req: Request<pb::ExitInstanceRequest>) -> Reply<pb::Instance> {
        let exited = self.api.exit(&req.into_inner().id).await?;
        Ok(Response::new(detail(&exited)))
    }
}
