//! `journeys.v1.DestinationService` over [`DestinationApi`]: conversion only.

use std::time::Duration;

use journeys_delivery::function::InvocationReport;
use journeys_delivery::mask_url_credentials;
use journeys_proto::convert::json::{
    duration, from_duration, json_to_struct, json_to_value, opt_timestamp, struct_to_json,
    timestamp,
};
use journeys_proto::v1 as pb;
use journeys_proto::v1::destination_service_server::DestinationService;
use journeys_store::OutboxRecord;
use tonic::{Request, Response};

use super::{Reply, count, page_size};
use crate::api::DestinationApi;
use crate::api::destinations::{DestinationInput, MASK, Settings, StoredDestination, WebhookInput};
use crate::api::functions::{FunctionInput, TestFunctionInput};
use crate::error::{Result, ServiceError};

/// The tonic face of the destination service.
#[derive(Clone)]
pub struct DestinationGrpc {
    api: DestinationApi,
}

impl DestinationGrpc {
    pub fn new(api: DestinationApi) -> Self {
        Self { api }
    }
}

fn webhook(w: &pb::WebhookSettings) -> WebhookInput {
    WebhookInput {
        url: w.url.clone(),
        headers: w
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signing_secret: w.signing_secret.clone(),
        timeout: w.timeout.as_ref().map(from_duration),
    }
}

/// A `Struct` as a JSON object, or why not (a non-finite number).
fn object(
    s: &prost_types::Struct,
    field: &str,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    match struct_to_json(s, field) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Ok(serde_json::Map::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn function(f: &pb::FunctionSettings) -> FunctionInput {
    FunctionInput {
        code: f.code.clone(),
        settings: f.settings.as_ref().map_or_else(
            || Ok(serde_json::Map::new()),
            |s| object(s, "destination.function.settings"),
        ),
        secrets: f
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: f.timeout.as_ref().map(from_duration),
    }
}

fn input(d: &pb::Destination) -> DestinationInput {
    DestinationInput {
        webhook: d.webhook.as_ref().map(webhook),
        function: d.function.as_ref().map(function),
    }
}

/// What a function's run did, as `TestFunction` and `SendTestEvent` answer it.
pub(crate) fn test_function_response(report: &InvocationReport) -> pb::TestFunctionResponse {
    let (result, error) = match &report.result {
        Ok(value) => (value.as_ref().map(json_to_value), None),
        Err(err) => (
            None,
            Some(pb::FunctionError {
                r#type: err.name.clone(),
                message: err.message.clone(),
                retryable: err.class == journeys_delivery::function::ErrorClass::Retry,
            }),
        ),
    };
    pb::TestFunctionResponse {
        result,
        error,
        logs: report.logs.clone(),
        fetches: report
            .fetches
            .iter()
            .map(|f| pb::FunctionFetch {
                method: f.method.clone(),
                url: mask_url_credentials(&f.url),
                status: f.status.map_or(0, i32::from),
                error: f.error.clone().unwrap_or_default(),
            })
            .collect(),
        duration: Some(duration(report.duration)),
    }
}

fn destination(stored: &StoredDestination) -> pb::Destination {
    let record = &stored.record;
    let mut out = pb::Destination {
        id: record.id.clone(),
        name: record.name.clone(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        ..Default::default()
    };
    match &stored.settings {
        Settings::Webhook(s) => out.webhook = Some(webhook_settings(s)),
        Settings::Function(f) => {
            out.function = Some(pb::FunctionSettings {
                code: f.code.clone(),
                settings: Some(json_to_struct(&serde_json::Value::Object(
                    f.settings.clone(),
                ))),
                secrets: f
                    .secrets
                    .keys()
                    .map(|k| (k.clone(), MASK.to_owned()))
                    .collect(),
                timeout: Some(duration(Duration::from_millis(f.timeout_ms))),
            });
        }
    }
    out
}

fn webhook_settings(s: &journeys_store::WebhookSettings) -> pb::WebhookSettings {
    pb::WebhookSettings {
        url: mask_url_credentials(&s.url),
        headers: s
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signing_secret: if s.signing_secret.is_empty() {
            String::new()
        } else {
            MASK.to_owned()
        },
        timeout: Some(duration(Duration::from_millis(s.timeout_ms))),
    }
}

fn dead_letter(r: &OutboxRecord) -> pb::DeadLetter {
    pb::DeadLetter {
        id: r.id.clone(),
        destination_id: r.destination_id.clone(),
        journey_id: r.journey_id.clone(),
        instance_id: r.instance_id.clone(),
        step_key: r.step_key.clone(),
        message_id: r.message_id.clone(),
        payload: Some(json_to_struct(&r.payload)),
        attempts: r.attempts,
        last_error: r.last_error.clone().unwrap_or_default(),
        dead_lettered_at: opt_timestamp(r.dead_at),
    }
}

fn required(d: Option<pb::Destination>) -> Result<pb::Destination> {
    d.ok_or_else(|| ServiceError::invalid_field("destination", "required"))
}

#[tonic::async_trait]
impl DestinationService for DestinationGrpc {
    async fn create_destination(
        &self,
        req: Request<pb::CreateDestinationRequest>,
    ) -> Reply<pb::Destination> {
        let d = required(req.into_inner().destination)?;
        let stored = self.api.create(&d.id, &d.name, input(&d)).await?;
        Ok(Response::new(destination(&stored)))
    }

    async fn get_destination(
        &self,
        req: Request<pb::GetDestinationRequest>,
    ) -> Reply<pb::Destination> {
        let stored = self.api.get(&req.into_inner().id).await?;
        Ok(Response::new(destination(&stored)))
    }

    async fn list_destinations(
        &self,
        req: Request<pb::ListDestinationsRequest>,
    ) -> Reply<pb::ListDestinationsResponse> {
        let req = req.into_inner();
        let page = self
            .api
            .list(page_size(req.page_size)?, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations: page.items.iter().map(destination).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn update_destination(
        &self,
        req: Request<pb::UpdateDestinationRequest>,
    ) -> Reply<pb::Destination> {
        let d = required(req.into_inner().destination)?;
        let stored = self.api.update(&d.id, &d.name, input(&d)).await?;
        Ok(Response::new(destination(&stored)))
    }

    async fn delete_destination(
        &self,
        req: Request<pb::DeleteDestinationRequest>,
    ) -> Reply<pb::DeleteDestinationResponse> {
        self.api.delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteDestinationResponse {}))
    }

    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Reply<pb::ListDeadLettersResponse> {
        let req = req.into_inner();
        let page = self
            .api
            .dead_letters(
                &req.destination_id,
                &req.journey_id,
                page_size(req.page_size)?,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page.items.iter().map(dead_letter).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        req: Request<pb::ReplayDeadLettersRequest>,
    ) -> Reply<pb::ReplayDeadLettersResponse> {
        let replayed = self.api.replay(&req.into_inner().ids).await?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: count(replayed),
        }))
    }

    async fn get_function_stats(
        &self,
        req: Request<pb::GetFunctionStatsRequest>,
    ) -> Reply<pb::GetFunctionStatsResponse> {
        let stats = self
            .api
            .function_stats(&req.into_inner().destination_id)
            .await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::GetFunctionStatsResponse {
            invocations: count(stats.invocations),
            errors: stats
                .errors
                .into_iter()
                .map(|(name, n)| (name, count(n)))
                .collect(),
            p50: stats.p50.map(duration),
            p99: stats.p99.map(duration),
        }))
    }

    async fn test_function(
        &self,
        req: Request<pb::TestFunctionRequest>,
    ) -> Reply<pb::TestFunctionResponse> {
        let req = req.into_inner();
        let report = self
            .api
            .test_function(TestFunctionInput {
                code: req.code,
                settings: req.settings.as_ref().map(|s| object(s, "settings")),
                secrets: req.secrets.into_iter().collect(),
                payload: req
                    .payload
                    .as_ref()
                    .map(|p| struct_to_json(p, "payload").map_err(|e| e.to_string())),
                destination_id: req.destination_id,
                timeout: req.timeout.as_ref().map(from_duration),
            })
            .await?;
        Ok(Response::new(test_function_response(&report)))
    }

    async fn get_destination_stats(
        &self,
        req: Request<pb::GetDestinationStatsRequest>,
    ) -> Reply<pb::GetDestinationStatsResponse> {
        let req = req.into_inner();
        let range = super::stats::range(req.from.as_ref(), req.to.as_ref())?;
        let hours = self.api.stats(&req.id, &range).await?;
        Ok(Response::new(super::stats::destination_response(&hours)))
    }
}
