//! `journeys.v1.DestinationService`: webhook destinations.
//!
//! The signing secret is write-only: responses carry it masked, and sending the mask back on
//! update keeps the stored secret. A destination that a published journey sends to cannot be
//! deleted.

use std::time::Duration;

use chrono::Utc;
use journeys_core::Problem;
use journeys_proto::v1 as pb;
use journeys_proto::v1::destination_service_server::DestinationService;
use journeys_runtime::error::ApiError;
use journeys_store::{
    DestinationKind, DestinationRecord, JourneyState, OutboxRecord, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::convert::json::{duration, from_duration, json_to_struct, opt_timestamp, timestamp};
use crate::{Deps, errors, fields, journeys, references};

/// What responses show instead of a stored signing secret.
pub const MASK: &str = "********";
/// Used when a destination sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest allowed request timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Webhook settings as stored (the `settings` JSON of a destination row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signing_secret: String,
    pub timeout_ms: u64,
}

#[derive(Clone)]
pub struct Destinations {
    store: Store,
    deps: Deps,
}

type Reply<T> = Result<Response<T>, Status>;

impl Destinations {
    pub fn new(deps: Deps) -> Self {
        Self {
            store: deps.store.clone(),
            deps,
        }
    }

    async fn create(&self, d: Option<pb::Destination>) -> Result<pb::Destination, ApiError> {
        let d = d.ok_or_else(|| ApiError::invalid_field("destination", "required"))?;
        let mut problems = Vec::new();
        if !d.id.is_empty() {
            fields::check_id("destination.id", &d.id, &mut problems);
        }
        fields::check_name("destination.name", &d.name, &mut problems);
        let settings = webhook(d.webhook.as_ref(), None, &mut problems);
        errors::check("destination", &problems)?;
        let mut record = DestinationRecord::new(
            d.name.clone(),
            DestinationKind::Webhook,
            to_json(&settings)?,
            Utc::now(),
        );
        if !d.id.is_empty() {
            record.id.clone_from(&d.id);
        }
        match self.store.destinations().insert(&record).await {
            Ok(stored) => Ok(to_proto(&stored, &settings)),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::AlreadyExists(format!(
                "a destination with id '{}' or name '{}' already exists",
                record.id, record.name
            ))),
            Err(e) => Err(errors::store(e)),
        }
    }

    async fn load(&self, id: &str) -> Result<(DestinationRecord, WebhookSettings), ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid_field("id", "required"));
        }
        let record = self
            .store
            .destinations()
            .get(id)
            .await
            .map_err(errors::store)?;
        let settings = from_json(&record)?;
        Ok((record, settings))
    }

    async fn update(&self, d: Option<pb::Destination>) -> Result<pb::Destination, ApiError> {
        let d = d.ok_or_else(|| ApiError::invalid_field("destination", "required"))?;
        let (current, current_settings) = self.load(&d.id).await.map_err(|e| match e {
            ApiError::InvalidArgument { .. } => {
                ApiError::invalid_field("destination.id", "required")
            }
            other => other,
        })?;
        let mut problems = Vec::new();
        fields::check_name("destination.name", &d.name, &mut problems);
        let settings = webhook(d.webhook.as_ref(), Some(&current_settings), &mut problems);
        errors::check("destination", &problems)?;
        match self
            .store
            .destinations()
            .update(&current.id, &d.name, to_json(&settings)?, Utc::now())
            .await
        {
            Ok(stored) => Ok(to_proto(&stored, &settings)),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::AlreadyExists(format!(
                "a destination named '{}' already exists",
                d.name
            ))),
            Err(e) => Err(errors::store(e)),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), ApiError> {
        self.load(id).await?;
        if let Some(journey) = self.published_user(id).await? {
            return Err(ApiError::FailedPrecondition(format!(
                "destination '{id}' is used by published journey '{journey}'; archive the \
                 journey first"
            )));
        }
        self.store
            .destinations()
            .delete(id)
            .await
            .map_err(errors::store)
    }

    /// The id of a published journey that sends to destination `id`, if any.
    async fn published_user(&self, id: &str) -> Result<Option<String>, ApiError> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .journeys()
                .list(Some(JourneyState::Published), 0, token.as_deref())
                .await
                .map_err(errors::store)?;
            for record in &page.items {
                if references::uses_destination(&journeys::decode(record)?, id) {
                    return Ok(Some(record.id.clone()));
                }
            }
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(None),
            }
        }
    }
}

/// Validates webhook settings; `current` supplies the secret when the mask is sent back.
fn webhook(
    w: Option<&pb::WebhookSettings>,
    current: Option<&WebhookSettings>,
    problems: &mut Vec<Problem>,
) -> WebhookSettings {
    let Some(w) = w else {
        problems.push(Problem::new("destination.webhook", "required"));
        return WebhookSettings {
            url: String::new(),
            headers: std::collections::BTreeMap::new(),
            signing_secret: String::new(),
            timeout_ms: 0,
        };
    };
    match w.url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => problems.push(Problem::new(
            "destination.webhook.url",
            format!("'{}' is not an absolute http:// or https:// URL", w.url),
        )),
    }
    for (name, value) in &w.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(Problem::new(
                format!("destination.webhook.headers[{name}]"),
                "not a valid HTTP header name",
            ));
        } else if http::HeaderValue::from_str(value).is_err() {
            problems.push(Problem::new(
                format!("destination.webhook.headers[{name}]"),
                "not a valid HTTP header value",
            ));
        }
    }
    let timeout = match w.timeout.as_ref().map(from_duration) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(d)) if d.is_zero() => DEFAULT_TIMEOUT,
        Some(Ok(d)) if d <= MAX_TIMEOUT => d,
        Some(Ok(_)) => {
            problems.push(Problem::new(
                "destination.webhook.timeout",
                format!("at most {}s", MAX_TIMEOUT.as_secs()),
            ));
            DEFAULT_TIMEOUT
        }
        Some(Err(why)) => {
            problems.push(Problem::new("destination.webhook.timeout", why));
            DEFAULT_TIMEOUT
        }
    };
    let signing_secret = match (w.signing_secret.as_str(), current) {
        (MASK, Some(c)) => c.signing_secret.clone(),
        (MASK, None) => {
            problems.push(Problem::new(
                "destination.webhook.signing_secret",
                "the mask is only accepted on update, to keep the stored secret",
            ));
            String::new()
        }
        (s, _) => s.to_owned(),
    };
    WebhookSettings {
        url: w.url.clone(),
        headers: w
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signing_secret,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
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

fn to_json(s: &WebhookSettings) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(s).map_err(ApiError::internal)
}

/// The stored settings of a destination row.
pub fn from_json(record: &DestinationRecord) -> Result<WebhookSettings, ApiError> {
    serde_json::from_value(record.settings.clone()).map_err(|e| {
        ApiError::internal(format!(
            "destination {} has unreadable settings: {e}",
            record.id
        ))
    })
}

fn to_proto(record: &DestinationRecord, s: &WebhookSettings) -> pb::Destination {
    pb::Destination {
        id: record.id.clone(),
        name: record.name.clone(),
        webhook: Some(pb::WebhookSettings {
            url: s.url.clone(),
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

#[tonic::async_trait]
impl DestinationService for Destinations {
    async fn create_destination(
        &self,
        req: Request<pb::CreateDestinationRequest>,
    ) -> Reply<pb::Destination> {
        Ok(Response::new(
            self.create(req.into_inner().destination).await?,
        ))
    }

    async fn get_destination(
        &self,
        req: Request<pb::GetDestinationRequest>,
    ) -> Reply<pb::Destination> {
        let (record, settings) = self.load(&req.into_inner().id).await?;
        Ok(Response::new(to_proto(&record, &settings)))
    }

    async fn list_destinations(
        &self,
        req: Request<pb::ListDestinationsRequest>,
    ) -> Reply<pb::ListDestinationsResponse> {
        let req = req.into_inner();
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let page = self
            .store
            .destinations()
            .list(size, Some(&req.page_token))
            .await
            .map_err(errors::store)?;
        let destinations = page
            .items
            .iter()
            .map(|r| from_json(r).map(|s| to_proto(r, &s)))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations,
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn update_destination(
        &self,
        req: Request<pb::UpdateDestinationRequest>,
    ) -> Reply<pb::Destination> {
        Ok(Response::new(
            self.update(req.into_inner().destination).await?,
        ))
    }

    async fn delete_destination(
        &self,
        req: Request<pb::DeleteDestinationRequest>,
    ) -> Reply<pb::DeleteDestinationResponse> {
        self.delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteDestinationResponse {}))
    }

    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Reply<pb::ListDeadLettersResponse> {
        let req = req.into_inner();
        let size =
            fields::page_size(req.page_size).map_err(|p| errors::invalid("request", &[p]))?;
        let page = self
            .store
            .outbox()
            .list_dead(
                Some(req.destination_id.as_str()).filter(|s| !s.is_empty()),
                Some(req.journey_id.as_str()).filter(|s| !s.is_empty()),
                size,
                Some(&req.page_token),
            )
            .await
            .map_err(errors::store)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page.items.iter().map(dead_letter).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        req: Request<pb::ReplayDeadLettersRequest>,
    ) -> Reply<pb::ReplayDeadLettersResponse> {
        let ids = req.into_inner().ids;
        let mut problems = Vec::new();
        if ids.is_empty() {
            problems.push(Problem::new(
                "ids",
                "at least one dead-letter id is required",
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            if id.is_empty() {
                problems.push(Problem::new(format!("ids[{i}]"), "must not be empty"));
            }
        }
        errors::check("request", &problems)?;
        let replayed = self
            .store
            .outbox()
            .replay(&ids, Utc::now())
            .await
            .map_err(errors::store)?;
        self.deps.delivery.waker().wake();
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: i32::try_from(replayed).unwrap_or(i32::MAX),
        }))
    }
}
