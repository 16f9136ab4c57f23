//! [`SimulateApi`]: previews, test sends and simulations — the core's pure renderer and
//! simulator behind the control plane. Nothing is stored; only a test send leaves the process.

use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_core::machine::{InstanceLimits, Journey, SendRequest};
use journeys_core::model::{Event, Json};
use journeys_core::payload::{PreviewError, preview_send};
use journeys_core::simulate::{Simulation, SimulationResult, simulate};
use journeys_delivery::{Dispatcher, TestOutcome};

use crate::error::{Result, ServiceError};

/// Most events one simulation may replay.
pub const MAX_SIMULATED_EVENTS: usize = 10_000;

/// The profile id a preview uses when the sample event names none.
pub const PREVIEW_USER: &str = "preview-user";

/// The engine's configured limits, which a simulation applies so that it agrees with
/// production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimulationLimits {
    pub instances: InstanceLimits,
    pub dedupe_window: Duration,
}

/// Previews and simulations over the core; test sends through the delivery client.
#[derive(Clone)]
pub struct SimulateApi {
    /// Delivers test sends once (no outbox, no retries).
    delivery: Dispatcher,
    limits: SimulationLimits,
}

impl SimulateApi {
    pub fn new(delivery: Dispatcher, limits: SimulationLimits) -> Self {
        Self { delivery, limits }
    }

    /// Renders send step `step_key` of `journey` for a sample entry event and traits: exactly
    /// what would be queued (destination, method, path, payload).
    pub fn render_sample(
        journey: &Journey,
        step_key: &str,
        sample: &Event,
        others: &[Event],
        traits: &Json,
        now: DateTime<Utc>,
    ) -> Result<SendRequest> {
        if step_key.is_empty() {
            return Err(ServiceError::invalid_field("step_key", "required"));
        }
        preview_send(journey, step_key, sample, others, traits, now).map_err(|e| match e {
            PreviewError::NotASendStep(key) => ServiceError::invalid_field(
                "step_key",
                format!("'{key}' is not a send step of this journey"),
            ),
            e @ PreviewError::NotInContext { index, .. } => {
                ServiceError::invalid_field(format!("sample_events[{index}].event"), e.to_string())
            }
            PreviewError::Payload(e) => {
                ServiceError::FailedPrecondition(format!("the payload cannot be rendered: {e}"))
            }
        })
    }

    /// Sends a rendered request once (a function destination: runs it once), under a fresh
    /// message id: a test send must not be dropped as a repeat of a real one.
    pub async fn send_test(&self, request: &SendRequest) -> Result<TestOutcome> {
        let message_id = format!("test-{}", uuid::Uuid::now_v7());
        Ok(self
            .delivery
            .send_test(
                &request.destination_id,
                &request.method,
                &request.path,
                &request.payload,
                &message_id,
            )
            .await?)
    }

    /// Replays `sim` through `journey` on a virtual clock, under the configured limits.
    pub async fn simulate(
        &self,
        journey: Journey,
        mut sim: Simulation,
    ) -> Result<SimulationResult> {
        if sim.events.len() > MAX_SIMULATED_EVENTS {
            return Err(too_many_events());
        }
        sim.instance_limits = self.limits.instances;
        sim.dedupe_window = Some(self.limits.dedupe_window);
        // CPU-bound and may replay thousands of events: kept off the I/O threads.
        tokio::task::spawn_blocking(move || simulate(&journey, &sim))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

/// The refusal of a simulation with more than [`MAX_SIMULATED_EVENTS`] events.
pub fn too_many_events() -> ServiceError {
    ServiceError::invalid_field(
        "events",
        format!("at most {MAX_SIMULATED_EVENTS} events per simulation"),
    )
}
