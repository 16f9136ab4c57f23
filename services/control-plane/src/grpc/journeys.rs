//! `journeys.v1.JourneyService` over [`JourneyApi`] and [`SimulateApi`]: conversion only.

use chrono::Utc;
use journeys_core::Problem;
use journeys_core::machine::Journey;
use journeys_core::model::JourneyMeta;
use journeys_delivery::TestOutcome;
use journeys_proto::convert::json::{duration, json_to_struct, opt_timestamp, timestamp};
use journeys_proto::convert::{journey_in, journey_out};
use journeys_proto::v1 as pb;
use journeys_proto::v1::journey_service_server::JourneyService;
use journeys_store::JourneyState;
use tonic::{Request, Response};

use super::{Reply, page_size, simulate};
use crate::api::journeys::{ArchiveMode, Authored, StoredJourney};
use crate::api::{JourneyApi, SimulateApi};
use crate::error::{Result, ServiceError};

/// The tonic face of the journey service.
#[derive(Clone)]
pub struct JourneyGrpc {
    api: JourneyApi,
    simulate: SimulateApi,
}

impl JourneyGrpc {
    pub fn new(api: JourneyApi, simulate: SimulateApi) -> Self {
        Self { api, simulate }
    }

    /// The stored journey a preview, test send or simulation names by `journey_id`.
    async fn journey(&self, journey_id: &str) -> Result<Journey> {
        let stored = self
            .api
            .get(journey_id)
            .await
            .map_err(|e| e.renaming_field("journey_id"))?;
        Ok(stored.journey())
    }

    /// Send step `step_key` rendered for the request's sample event and traits.
    async fn render(
        &self,
        journey_id: &str,
        step_key: &str,
        sample: Option<&pb::Event>,
        others: &[pb::Event],
        traits: Option<&prost_types::Struct>,
    ) -> Result<journeys_core::machine::SendRequest> {
        let journey = self.journey(journey_id).await?;
        if step_key.is_empty() {
            return Err(ServiceError::invalid_field("step_key", "required"));
        }
        let now = Utc::now();
        let (sample, traits) = simulate::sample(&journey, sample, traits, now)?;
        let others = simulate::samples(&sample, others, now)?;
        SimulateApi::render_sample(&journey, step_key, &sample, &others, &traits, now)
    }
}

/// A definition as read from a request.
fn authored(journey: &pb::Journey) -> Authored {
    let mut problems = Vec::new();
    let definition = journey_in::definition(journey, &mut problems);
    Authored {
        definition,
        problems,
    }
}

/// The full message for a stored journey.
pub fn journey(stored: &StoredJourney) -> pb::Journey {
    let record = &stored.record;
    let mut out = journey_out::definition(&stored.definition);
    out.id.clone_from(&record.id);
    out.state = state(record.state) as i32;
    out.revision = record.revision;
    out.created_at = Some(timestamp(record.created_at));
    out.updated_at = Some(timestamp(record.updated_at));
    out.published_at = opt_timestamp(record.published_at);
    out.archived_at = opt_timestamp(record.archived_at);
    out.replaces = record.replaces.clone().unwrap_or_default();
    out.replace_excludes_active = record.replace_excludes_active;
    out
}

/// An archive mode field: unspecified is drain.
fn archive_mode(field: &str, mode: i32) -> Result<ArchiveMode> {
    match pb::ArchiveMode::try_from(mode) {
        Ok(pb::ArchiveMode::Exit) => Ok(ArchiveMode::Exit),
        Ok(_) => Ok(ArchiveMode::Drain),
        Err(_) => Err(ServiceError::invalid_field(field, "unknown archive mode")),
    }
}

fn state(s: JourneyState) -> pb::JourneyState {
    match s {
        JourneyState::Draft => pb::JourneyState::Draft,
        JourneyState::Published => pb::JourneyState::Published,
        JourneyState::Archived => pb::JourneyState::Archived,
    }
}

fn state_filter(state: i32) -> Result<Option<JourneyState>> {
    match pb::JourneyState::try_from(state) {
        Ok(pb::JourneyState::Unspecified) => Ok(None),
        Ok(pb::JourneyState::Draft) => Ok(Some(JourneyState::Draft)),
        Ok(pb::JourneyState::Published) => Ok(Some(JourneyState::Published)),
        Ok(pb::JourneyState::Archived) => Ok(Some(JourneyState::Archived)),
        Err(_) => Err(ServiceError::invalid_field(
            "state",
            "unknown journey state",
        )),
    }
}

fn problems(problems: Vec<Problem>) -> pb::ValidateJourneyResponse {
    pb::ValidateJourneyResponse {
        valid: problems.is_empty(),
        problems: problems
            .into_iter()
            .map(|p| pb::Problem {
                path: p.path,
                message: p.message,
            })
            .collect(),
    }
}

fn required(journey: Option<pb::Journey>) -> Result<pb::Journey> {
    journey.ok_or_else(|| ServiceError::invalid_field("journey", "required"))
}

#[tonic::async_trait]
impl JourneyService for JourneyGrpc {
    async fn create_journey(&self, req: Request<pb::CreateJourneyRequest>) -> Reply<pb::Journey> {
        let j = required(req.into_inner().journey)?;
        let stored = self.api.create(&j.id, authored(&j)).await?;
        Ok(Response::new(journey(&stored)))
    }

    async fn get_journey(&self, req: Request<pb::GetJourneyRequest>) -> Reply<pb::Journey> {
        let stored = self.api.get(&req.into_inner().id).await?;
        Ok(Response::new(journey(&stored)))
    }

    async fn list_journeys(
        &self,
        req: Request<pb::ListJourneysRequest>,
    ) -> Reply<pb::ListJourneysResponse> {
        let req = req.into_inner();
        let state = state_filter(req.state)?;
        let page = self
            .api
            .list(state, page_size(req.page_size)?, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListJourneysResponse {
            journeys: page.items.iter().map(journey).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn update_journey(&self, req: Request<pb::UpdateJourneyRequest>) -> Reply<pb::Journey> {
        let j = required(req.into_inner().journey)?;
        let stored = self.api.update(&j.id, j.revision, authored(&j)).await?;
        Ok(Response::new(journey(&stored)))
    }

    async fn delete_journey(
        &self,
        req: Request<pb::DeleteJourneyRequest>,
    ) -> Reply<pb::DeleteJourneyResponse> {
        self.api.delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteJourneyResponse {}))
    }

    async fn validate_journey(
        &self,
        req: Request<pb::ValidateJourneyRequest>,
    ) -> Reply<pb::ValidateJourneyResponse> {
        use pb::validate_journey_request::Target;
        let found = match req.into_inner().target {
            Some(Target::Journey(j)) => self.api.problems_of(authored(&j)).await?,
            Some(Target::Id(id)) => {
                let stored = self.api.get(&id).await?;
                self.api.problems(&stored.definition).await?
            }
            None => {
                return Err(ServiceError::invalid_field(
                    "target",
                    "one of `journey` or `id` is required",
                )
                .into());
            }
        };
        Ok(Response::new(problems(found)))
    }

    async fn publish_journey(&self, req: Request<pb::PublishJourneyRequest>) -> Reply<pb::Journey> {
        let req = req.into_inner();
        let mode = archive_mode("replace_mode", req.replace_mode)?;
        let stored = if req.replaces.is_empty() {
            if req.replace_mode != pb::ArchiveMode::Unspecified as i32 {
                return Err(ServiceError::invalid_field(
                    "replace_mode",
                    "only with `replaces` (the journey this one replaces)",
                )
                .into());
            }
            if req.exclude_active {
                return Err(ServiceError::invalid_field(
                    "exclude_active",
                    "only with `replaces` (the journey this one replaces)",
                )
                .into());
            }
            self.api.publish(&req.id).await?
        } else {
            self.api
                .publish_replacing(&req.id, &req.replaces, mode, req.exclude_active)
                .await?
        };
        Ok(Response::new(journey(&stored)))
    }

    async fn archive_journey(&self, req: Request<pb::ArchiveJourneyRequest>) -> Reply<pb::Journey> {
        let req = req.into_inner();
        let mode = archive_mode("mode", req.mode)?;
        let stored = self.api.archive(&req.id, mode).await?;
        Ok(Response::new(journey(&stored)))
    }

    async fn duplicate_journey(
        &self,
        req: Request<pb::DuplicateJourneyRequest>,
    ) -> Reply<pb::Journey> {
        let req = req.into_inner();
        let stored = self.api.duplicate(&req.id, &req.name).await?;
        Ok(Response::new(journey(&stored)))
    }

    async fn preview_payload(
        &self,
        req: Request<pb::PreviewPayloadRequest>,
    ) -> Reply<pb::PreviewPayloadResponse> {
        let req = req.into_inner();
        let request = self
            .render(
                &req.journey_id,
                &req.step_key,
                req.sample_event.as_ref(),
                &req.sample_events,
                req.traits.as_ref(),
            )
            .await?;
        Ok(Response::new(pb::PreviewPayloadResponse {
            payload: Some(json_to_struct(&request.payload)),
        }))
    }

    async fn send_test_event(
        &self,
        req: Request<pb::SendTestEventRequest>,
    ) -> Reply<pb::SendTestEventResponse> {
        let req = req.into_inner();
        let request = self
            .render(
                &req.journey_id,
                &req.step_key,
                req.sample_event.as_ref(),
                &req.sample_events,
                req.traits.as_ref(),
            )
            .await?;
        Ok(Response::new(
            match self.simulate.send_test(&request).await? {
                TestOutcome::Webhook(outcome) => pb::SendTestEventResponse {
                    status_code: i32::from(outcome.status),
                    body: outcome.body,
                    latency: Some(duration(outcome.latency)),
                    function: None,
                },
                TestOutcome::Function(report) => pb::SendTestEventResponse {
                    status_code: 0,
                    body: match &report.result {
                        Ok(Some(value)) => value.to_string(),
                        Ok(None) => String::new(),
                        Err(err) => err.to_string(),
                    },
                    latency: Some(duration(report.duration)),
                    function: Some(super::destinations::test_function_response(&report)),
                },
            },
        ))
    }

    async fn simulate_journey(
        &self,
        req: Request<pb::SimulateJourneyRequest>,
    ) -> Reply<pb::SimulateJourneyResponse> {
        use pb::simulate_journey_request::Target;
        let req = req.into_inner();
        let journey = match &req.target {
            Some(Target::Id(id)) => self.api.get(id).await?.journey(),
            Some(Target::Journey(j)) => {
                let definition = self
                    .api
                    .checked(authored(j))
                    .map_err(|p| ServiceError::invalid("journey", p))?;
                let meta = JourneyMeta {
                    id: if j.id.is_empty() {
                        "simulation".to_owned()
                    } else {
                        j.id.clone()
                    },
                    version: j.revision,
                    name: definition.name.clone(),
                };
                Journey::new(meta, definition)
            }
            None => {
                return Err(ServiceError::invalid_field(
                    "target",
                    "one of `journey` or `id` is required",
                )
                .into());
            }
        };
        let sim = simulate::simulation(&req, Utc::now())?;
        let result = self.simulate.simulate(journey, sim).await?;
        Ok(Response::new(simulate::response(&result)))
    }

    async fn get_journey_stats(
        &self,
        req: Request<pb::GetJourneyStatsRequest>,
    ) -> Reply<pb::GetJourneyStatsResponse> {
        let req = req.into_inner();
        let range = super::stats::range(req.from.as_ref(), req.to.as_ref())?;
        let (stored, counts) = self.api.stats(&req.id, &range, req.hourly).await?;
        Ok(Response::new(super::stats::response(
            &stored.definition,
            &counts,
        )))
    }
}
