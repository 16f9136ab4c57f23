//! `journeys.v1.JourneyService`: journey definitions and their lifecycle.
//!
//! Drafts are stored only when their definition is structurally valid (every problem is
//! reported at once, with paths); references to the catalog, destinations and audiences are
//! checked by `ValidateJourney` and enforced by `PublishJourney`. Published journeys are
//! immutable: to change one, duplicate it.

use chrono::Utc;
use journeys_core::Problem;
use journeys_core::model::{JourneyDefinition, JourneyMeta};
use journeys_core::validate::{ValidationOptions, validate};
use journeys_proto::v1 as pb;
use journeys_proto::v1::journey_service_server::JourneyService;
use journeys_runtime::error::ApiError;
use journeys_store::{JourneyChanges, JourneyRecord, JourneyState, Store, StoreError};
use tonic::{Request, Response, Status};

use crate::convert::json::{duration, json_to_struct};
use crate::convert::{journey_in, journey_out};
use crate::errors::{delivery_error, engine_error};
use crate::{Deps, errors, fields, references, simulate, stats};

/// The journey service over a store.
#[derive(Clone)]
pub struct Journeys {
    store: Store,
    deps: Deps,
    validation: ValidationOptions,
}

type Reply<T> = Result<Response<T>, Status>;

impl Journeys {
    pub fn new(deps: Deps, validation: ValidationOptions) -> Self {
        Self {
            store: deps.store.clone(),
            deps,
            validation,
        }
    }

    /// Converts and validates a definition, returning it or every problem found.
    fn definition(&self, journey: &pb::Journey) -> Result<JourneyDefinition, Vec<Problem>> {
        let mut problems = Vec::new();
        let def = journey_in::definition(journey, &mut problems);
        problems.extend(validate(&def, &self.validation));
        dedupe(&mut problems);
        if problems.is_empty() {
            Ok(def)
        } else {
            Err(problems)
        }
    }

    async fn load(&self, id: &str) -> Result<(JourneyRecord, JourneyDefinition), ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid_field("id", "required"));
        }
        let record = self.store.journeys().get(id).await.map_err(errors::store)?;
        let def = decode(&record)?;
        Ok((record, def))
    }

    async fn create(&self, journey: Option<pb::Journey>) -> Result<pb::Journey, ApiError> {
        let journey = journey.ok_or_else(|| ApiError::invalid_field("journey", "required"))?;
        let mut problems = Vec::new();
        if !journey.id.is_empty() {
            fields::check_id("id", &journey.id, &mut problems);
        }
        let def = match self.definition(&journey) {
            Ok(def) => Some(def),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        errors::check("journey", &problems)?;
        let def = def.ok_or_else(|| ApiError::internal("definition missing after validation"))?;
        let mut record = JourneyRecord::new_draft(
            def.name.clone(),
            def.description.clone(),
            encode(&def)?,
            Utc::now(),
        );
        if !journey.id.is_empty() {
            record.id.clone_from(&journey.id);
        }
        self.insert(record, &def).await
    }

    /// Inserts a new journey, telling apart a taken name from a taken id.
    async fn insert(
        &self,
        record: JourneyRecord,
        def: &JourneyDefinition,
    ) -> Result<pb::Journey, ApiError> {
        match self.store.journeys().insert(&record).await {
            Ok(stored) => Ok(journey_out::journey(&stored, def)),
            Err(StoreError::AlreadyExists { .. }) => {
                Err(self.taken(&record.id, &record.name).await)
            }
            Err(e) => Err(errors::store(e)),
        }
    }

    async fn taken(&self, id: &str, name: &str) -> ApiError {
        match self.store.journeys().get_by_name(name).await {
            Ok(_) => ApiError::AlreadyExists(format!("a journey named '{name}' already exists")),
            Err(_) => ApiError::AlreadyExists(format!("a journey with id '{id}' already exists")),
        }
    }

    async fn update(&self, journey: Option<pb::Journey>) -> Result<pb::Journey, ApiError> {
        let journey = journey.ok_or_else(|| ApiError::invalid_field("journey", "required"))?;
        let (current, _) = self.load(&journey.id).await.map_err(|e| match e {
            ApiError::InvalidArgument { .. } => ApiError::invalid_field("journey.id", "required"),
            other => other,
        })?;
        require_draft(&current, "edited")?;
        if journey.revision != 0 && journey.revision != current.revision {
            return Err(ApiError::FailedPrecondition(format!(
                "journey '{}' is at revision {}, not {}: read it again and retry",
                current.id, current.revision, journey.revision
            )));
        }
        let def = self
            .definition(&journey)
            .map_err(|p| errors::invalid("journey", &p))?;
        let changes = JourneyChanges {
            name: def.name.clone(),
            description: def.description.clone(),
            definition: encode(&def)?,
        };
        match self
            .store
            .journeys()
            .update(&current.id, current.revision, changes, Utc::now())
            .await
        {
            Ok(stored) => Ok(journey_out::journey(&stored, &def)),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::AlreadyExists(format!(
                "a journey named '{}' already exists",
                def.name
            ))),
            Err(e) => Err(errors::store(e)),
        }
    }

    /// Definition problems plus unresolved references.
    async fn problems(&self, def: &JourneyDefinition) -> Result<Vec<Problem>, ApiError> {
        let mut problems = validate(def, &self.validation);
        problems.extend(
            references::check(&self.store, def)
                .await
                .map_err(errors::store)?,
        );
        dedupe(&mut problems);
        Ok(problems)
    }

    async fn validate_target(
        &self,
        target: Option<pb::validate_journey_request::Target>,
    ) -> Result<Vec<Problem>, ApiError> {
        use pb::validate_journey_request::Target;
        match target {
            Some(Target::Journey(journey)) => match self.definition(&journey) {
                Ok(def) => self.problems(&def).await,
                Err(problems) => Ok(problems),
            },
            Some(Target::Id(id)) => {
                let (_, def) = self.load(&id).await?;
                self.problems(&def).await
            }
            None => Err(ApiError::invalid_field(
                "target",
                "one of `journey` or `id` is required",
            )),
        }
    }

    async fn publish(&self, id: &str) -> Result<pb::Journey, ApiError> {
        let (record, def) = self.load(id).await?;
        match record.state {
            JourneyState::Draft => {}
            JourneyState::Published => {
                return Err(ApiError::FailedPrecondition(format!(
                    "journey '{id}' is already published"
                )));
            }
            JourneyState::Archived => {
                return Err(ApiError::FailedPrecondition(format!(
                    "journey '{id}' is archived; duplicate it to publish a new version"
                )));
            }
        }
        let problems = self.problems(&def).await?;
        if !problems.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "journey '{id}' cannot be published: {}",
                errors::joined(&problems)
            )));
        }
        let stored = self
            .store
            .journeys()
            .set_state(id, JourneyState::Published, Utc::now())
            .await
            .map_err(errors::store)?;
        self.refresh_engine().await;
        Ok(journey_out::journey(&stored, &def))
    }

    /// Makes an engine in this process see a publish or archive at once (`journeys dev`);
    /// engines in other processes see it at their next poll (within a second). Publishing has
    /// committed either way, so a failed refresh is only logged.
    async fn refresh_engine(&self) {
        if let Err(error) = self.deps.engine.refresh_now().await {
            tracing::warn!(%error, "journey cache refresh failed; the next poll will retry");
        }
    }

    async fn archive(&self, id: &str, mode: i32) -> Result<pb::Journey, ApiError> {
        let mode = pb::ArchiveMode::try_from(mode)
            .map_err(|_| ApiError::invalid_field("mode", "unknown archive mode"))?;
        let (record, def) = self.load(id).await?;
        match record.state {
            JourneyState::Draft => {
                return Err(ApiError::FailedPrecondition(format!(
                    "journey '{id}' is a draft; only published journeys can be archived (delete \
                     the draft instead)"
                )));
            }
            JourneyState::Archived => return Ok(journey_out::journey(&record, &def)),
            JourneyState::Published => {}
        }
        let stored = self
            .store
            .journeys()
            .set_state(id, JourneyState::Archived, Utc::now())
            .await
            .map_err(errors::store)?;
        self.refresh_engine().await;
        if mode == pb::ArchiveMode::Exit {
            let exited = self
                .deps
                .engine
                .terminate_journey_instances(id)
                .await
                .map_err(engine_error)?;
            tracing::info!(journey_id = id, exited, "archived in exit mode");
        }
        Ok(journey_out::journey(&stored, &def))
    }

    async fn duplicate(&self, id: &str, name: &str) -> Result<pb::Journey, ApiError> {
        let (_, mut def) = self.load(id).await?;
        if name.is_empty() {
            def.name = self.copy_name(&def.name).await?;
        } else {
            let mut problems = Vec::new();
            fields::check_name("name", name, &mut problems);
            errors::check("duplicate request", &problems)?;
            name.clone_into(&mut def.name);
        }
        let record = JourneyRecord::new_draft(
            def.name.clone(),
            def.description.clone(),
            encode(&def)?,
            Utc::now(),
        );
        self.insert(record, &def).await
    }

    /// "<name> (copy)", "<name> (copy 2)", … — the first free one, within the name limit.
    async fn copy_name(&self, original: &str) -> Result<String, ApiError> {
        for n in 1..100 {
            let suffix = if n == 1 {
                " (copy)".to_owned()
            } else {
                format!(" (copy {n})")
            };
            let keep = fields::MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
            let candidate: String = original.chars().take(keep).chain(suffix.chars()).collect();
            match self.store.journeys().get_by_name(&candidate).await {
                Err(StoreError::NotFound { .. }) => return Ok(candidate),
                Err(e) => return Err(errors::store(e)),
                Ok(_) => {}
            }
        }
        Err(ApiError::AlreadyExists(
            "no free copy name; pass `name`".to_owned(),
        ))
    }

    async fn list(
        &self,
        req: pb::ListJourneysRequest,
    ) -> Result<pb::ListJourneysResponse, ApiError> {
        let state = match pb::JourneyState::try_from(req.state) {
            Ok(pb::JourneyState::Unspecified) => None,
            Ok(pb::JourneyState::Draft) => Some(JourneyState::Draft),
            Ok(pb::JourneyState::Published) => Some(JourneyState::Published),
            Ok(pb::JourneyState::Archived) => Some(JourneyState::Archived),
            Err(_) => return Err(ApiError::invalid_field("state", "unknown journey state")),
        };
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let page = self
            .store
            .journeys()
            .list(state, size, Some(&req.page_token))
            .await
            .map_err(errors::store)?;
        let journeys = page
            .items
            .iter()
            .map(|r| decode(r).map(|def| journey_out::journey(r, &def)))
            .collect::<Result<_, _>>()?;
        Ok(pb::ListJourneysResponse {
            journeys,
            next_page_token: page.next_token.unwrap_or_default(),
        })
    }

    async fn delete(&self, id: &str) -> Result<(), ApiError> {
        let (record, _) = self.load(id).await?;
        require_draft(&record, "deleted")?;
        self.store
            .journeys()
            .delete(id)
            .await
            .map_err(errors::store)
    }
}

fn require_draft(record: &JourneyRecord, verb: &str) -> Result<(), ApiError> {
    match record.state {
        JourneyState::Draft => Ok(()),
        state => Err(ApiError::FailedPrecondition(format!(
            "journey '{}' is {}; only drafts can be {verb} (duplicate it to make changes)",
            record.id,
            state.as_str().to_ascii_lowercase()
        ))),
    }
}

/// Keeps the first problem reported for each path: conversion and validation may both notice
/// one fault, and a user needs it once.
fn dedupe(problems: &mut Vec<Problem>) {
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.path.clone()));
}

/// Identity and revision of a stored journey, as payloads and instances record them.
fn meta(record: &JourneyRecord) -> JourneyMeta {
    JourneyMeta {
        id: record.id.clone(),
        version: record.revision,
        name: record.name.clone(),
    }
}

fn encode(def: &JourneyDefinition) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(def).map_err(ApiError::internal)
}

/// Decodes a stored definition. Failure means a corrupt row or an incompatible upgrade.
pub fn decode(record: &JourneyRecord) -> Result<JourneyDefinition, ApiError> {
    serde_json::from_value(record.definition.clone()).map_err(|e| {
        ApiError::internal(format!(
            "journey {} has an unreadable definition: {e}",
            record.id
        ))
    })
}

#[tonic::async_trait]
impl JourneyService for Journeys {
    async fn create_journey(&self, req: Request<pb::CreateJourneyRequest>) -> Reply<pb::Journey> {
        Ok(Response::new(self.create(req.into_inner().journey).await?))
    }

    async fn get_journey(&self, req: Request<pb::GetJourneyRequest>) -> Reply<pb::Journey> {
        let (record, def) = self.load(&req.into_inner().id).await?;
        Ok(Response::new(journey_out::journey(&record, &def)))
    }

    async fn list_journeys(
        &self,
        req: Request<pb::ListJourneysRequest>,
    ) -> Reply<pb::ListJourneysResponse> {
        Ok(Response::new(self.list(req.into_inner()).await?))
    }

    async fn update_journey(&self, req: Request<pb::UpdateJourneyRequest>) -> Reply<pb::Journey> {
        Ok(Response::new(self.update(req.into_inner().journey).await?))
    }

    async fn delete_journey(
        &self,
        req: Request<pb::DeleteJourneyRequest>,
    ) -> Reply<pb::DeleteJourneyResponse> {
        self.delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteJourneyResponse {}))
    }

    async fn validate_journey(
        &self,
        req: Request<pb::ValidateJourneyRequest>,
    ) -> Reply<pb::ValidateJourneyResponse> {
        let problems = self.validate_target(req.into_inner().target).await?;
        Ok(Response::new(pb::ValidateJourneyResponse {
            valid: problems.is_empty(),
            problems: problems
                .into_iter()
                .map(|p| pb::Problem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        }))
    }

    async fn publish_journey(&self, req: Request<pb::PublishJourneyRequest>) -> Reply<pb::Journey> {
        Ok(Response::new(self.publish(&req.into_inner().id).await?))
    }

    async fn archive_journey(&self, req: Request<pb::ArchiveJourneyRequest>) -> Reply<pb::Journey> {
        let req = req.into_inner();
        Ok(Response::new(self.archive(&req.id, req.mode).await?))
    }

    async fn duplicate_journey(
        &self,
        req: Request<pb::DuplicateJourneyRequest>,
    ) -> Reply<pb::Journey> {
        let req = req.into_inner();
        Ok(Response::new(self.duplicate(&req.id, &req.name).await?))
    }

    async fn preview_payload(
        &self,
        req: Request<pb::PreviewPayloadRequest>,
    ) -> Reply<pb::PreviewPayloadResponse> {
        let req = req.into_inner();
        let (record, def) = self.load(&req.journey_id).await.map_err(|e| match e {
            ApiError::InvalidArgument { .. } => ApiError::invalid_field("journey_id", "required"),
            other => other,
        })?;
        let journey = simulate::core_journey(meta(&record), def);
        let request = simulate::render_sample(
            &journey,
            &req.step_key,
            req.sample_event.as_ref(),
            req.traits.as_ref(),
            Utc::now(),
        )?;
        Ok(Response::new(pb::PreviewPayloadResponse {
            payload: Some(json_to_struct(&request.payload)),
        }))
    }

    async fn send_test_event(
        &self,
        req: Request<pb::SendTestEventRequest>,
    ) -> Reply<pb::SendTestEventResponse> {
        let req = req.into_inner();
        let (record, def) = self.load(&req.journey_id).await.map_err(|e| match e {
            ApiError::InvalidArgument { .. } => ApiError::invalid_field("journey_id", "required"),
            other => other,
        })?;
        let journey = simulate::core_journey(meta(&record), def);
        let request = simulate::render_sample(
            &journey,
            &req.step_key,
            req.sample_event.as_ref(),
            req.traits.as_ref(),
            Utc::now(),
        )?;
        // A fresh message id: a test send must not be dropped as a repeat of a real one.
        let message_id = format!("test-{}", uuid::Uuid::now_v7());
        let outcome = self
            .deps
            .delivery
            .deliver_once(
                &request.destination_id,
                &request.method,
                &request.path,
                &request.payload,
                &message_id,
            )
            .await
            .map_err(delivery_error)?;
        Ok(Response::new(pb::SendTestEventResponse {
            status_code: i32::from(outcome.status),
            body: outcome.body,
            latency: Some(duration(outcome.latency)),
        }))
    }

    async fn simulate_journey(
        &self,
        req: Request<pb::SimulateJourneyRequest>,
    ) -> Reply<pb::SimulateJourneyResponse> {
        use pb::simulate_journey_request::Target;
        let req = req.into_inner();
        let (meta, def) = match &req.target {
            Some(Target::Id(id)) => {
                let (record, def) = self.load(id).await?;
                (meta(&record), def)
            }
            Some(Target::Journey(journey)) => {
                let def = self
                    .definition(journey)
                    .map_err(|p| errors::invalid("journey", &p))?;
                let meta = JourneyMeta {
                    id: if journey.id.is_empty() {
                        "simulation".to_owned()
                    } else {
                        journey.id.clone()
                    },
                    version: journey.revision,
                    name: def.name.clone(),
                };
                (meta, def)
            }
            None => {
                return Err(ApiError::invalid_field(
                    "target",
                    "one of `journey` or `id` is required",
                )
                .into());
            }
        };
        let sim = simulate::simulation(&req, Utc::now())?;
        let journey = simulate::core_journey(meta, def);
        // Simulation is CPU-bound and may replay thousands of events: keep it off the I/O threads.
        let response = tokio::task::spawn_blocking(move || simulate::run(&journey, &sim))
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(response))
    }

    async fn get_journey_stats(
        &self,
        req: Request<pb::GetJourneyStatsRequest>,
    ) -> Reply<pb::GetJourneyStatsResponse> {
        let (record, def) = self.load(&req.into_inner().id).await?;
        let counts = self
            .deps
            .store
            .runtime()
            .journey_stats(&record.id)
            .await
            .map_err(errors::store)?;
        Ok(Response::new(stats::response(&def, &counts)))
    }
}
