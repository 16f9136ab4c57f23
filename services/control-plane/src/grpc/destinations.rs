//! `journeys.v1.DestinationService` over [`DestinationApi`]: conversion only.

use std::time::Duration;

use journeys_delivery::mask_url_credentials;
use journeys_proto::convert::json::{
    duration, from_duration, json_to_struct, opt_timestamp, timestamp,
};
use journeys_proto::v1 as pb;
use journeys_proto::v1::destination_service_server::DestinationService;
use journeys_store::OutboxRecord;
use tonic::{Request, Response};

use super::{Reply, count, page_size};
use crate::api::DestinationApi;
use crate::api::destinations::{MASK, StoredDestination, WebhookInput};
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

fn destination(stored: &StoredDestination) -> pb::Destination {
    let (record, s) = (&stored.record, &stored.settings);
    pb::Destination {
        id: record.id.clone(),
        name: record.name.clone(),
        webhook: Some(pb::WebhookSettings {
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
        }),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
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
        let stored = self
            .api
            .create(&d.id, &d.name, d.webhook.as_ref().map(webhook))
            .await?;
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
        let stored = self
            .api
            .update(&d.id, &d.name, d.webhook.as_ref().map(webhook))
            .await?;
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
