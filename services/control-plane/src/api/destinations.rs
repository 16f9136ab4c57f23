//! [`DestinationApi`]: webhook destinations, destination functions and their dead letters.
//!
//! A function's code is checked on create and update by the delivery's own engine: it must
//! compile, its top level must run within the limits and it must define a handler. Its secret
//! settings are write-only like a webhook's signing secret (masked on read; the mask on update
//! keeps the stored value). Destinations are shared by reference: an update applies to every
//! journey that sends to it, published ones included, from the next delivery attempt.
//!
//! The signing secret is write-only: responses carry it masked, and sending the mask back on
//! update keeps the stored secret. Credentials in the URL (`https://user:password@host/`) are
//! shown masked the same way (`https://user:********@host/`); sending the masked URL back
//! unchanged keeps the stored one. A destination that a published journey sends to cannot be
//! deleted.
//!
//! URLs are checked against the delivery's address policy: a literal IP host in any form
//! (`http://2130706433/` is 127.0.0.1) or a `localhost` name that the policy refuses is refused
//! here with the reason; names are resolved and checked again at every connection.

use std::time::Duration;

use chrono::Utc;
use journeys_core::Problem;
use journeys_delivery::{AddressPolicy, CREDENTIALS_MASK, Dispatcher, Waker, mask_url_credentials};
use journeys_store::{
    DeliveryHour, DestinationKind, DestinationRecord, FunctionSettings, JourneyState, OutboxRecord,
    Page, StatsRange, Store, StoreError, WebhookSettings,
};

use super::functions::{FunctionInput, function_settings};

use crate::error::{Result, ServiceError};
use crate::{fields, references};

/// What responses show instead of a stored signing secret.
pub const MASK: &str = "********";

/// Webhook settings as a request gives them, before the rules are applied.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The secret, [`MASK`] to keep the stored one, or empty for none.
    pub signing_secret: String,
    /// `None` when unset; `Err` with a reason when malformed.
    pub timeout: Option<Result<Duration, &'static str>>,
}

/// A destination's settings, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Settings {
    Webhook(WebhookSettings),
    Function(FunctionSettings),
}

impl Settings {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Webhook(s) => s.to_json(),
            Self::Function(s) => s.to_json(),
        }
    }

    fn kind(&self) -> DestinationKind {
        match self {
            Self::Webhook(_) => DestinationKind::Webhook,
            Self::Function(_) => DestinationKind::Function,
        }
    }
}

/// What a create or update request gives, before the rules are applied.
#[derive(Debug, Clone, Default)]
pub struct DestinationInput {
    pub webhook: Option<WebhookInput>,
    pub function: Option<FunctionInput>,
}

/// A stored destination with its decoded settings.
#[derive(Debug, Clone)]
pub struct StoredDestination {
    pub record: DestinationRecord,
    pub settings: Settings,
}

impl StoredDestination {
    fn decode(record: DestinationRecord) -> Result<Self> {
        let unreadable = |e: serde_json::Error| {
            ServiceError::Internal(format!(
                "destination {} has unreadable settings: {e}",
                record.id
            ))
        };
        let settings = match record.kind {
            DestinationKind::Webhook => {
                Settings::Webhook(WebhookSettings::of(&record).map_err(unreadable)?)
            }
            DestinationKind::Function => {
                Settings::Function(FunctionSettings::of(&record).map_err(unreadable)?)
            }
        };
        Ok(Self { record, settings })
    }

    /// The function settings, when this is a function.
    pub fn function(&self) -> Option<&FunctionSettings> {
        match &self.settings {
            Settings::Function(f) => Some(f),
            Settings::Webhook(_) => None,
        }
    }
}

/// Destination rules over the store's `Destinations` and `Outbox` repositories.
#[derive(Clone)]
pub struct DestinationApi {
    store: Store,
    /// Woken after a replay so the dispatcher picks the rows up at once.
    delivery: Waker,
    /// Where destinations may point (the delivery's own policy).
    policy: AddressPolicy,
    /// Runs destination functions: checks their code, and `TestFunction`.
    pub(crate) functions: Dispatcher,
}

impl DestinationApi {
    pub fn new(store: Store, delivery: Dispatcher) -> Self {
        Self {
            store,
            delivery: delivery.waker(),
            policy: delivery.address_policy().clone(),
            functions: delivery,
        }
    }

    /// The settings `input` gives, checked (a function's code compiled): exactly one kind,
    /// the same as `current`'s on update.
    async fn settings(
        &self,
        input: DestinationInput,
        current: Option<&Settings>,
        problems: &mut Vec<Problem>,
    ) -> Settings {
        match (input.webhook, input.function, current) {
            (Some(_), Some(_), _) => {
                problems.push(Problem::new(
                    "destination",
                    "set one of webhook and function, not both",
                ));
                Settings::Webhook(WebhookSettings::default())
            }
            (None, Some(_), Some(Settings::Webhook(_))) => {
                problems.push(Problem::new(
                    "destination.function",
                    "this destination is a webhook; the kind is fixed at creation",
                ));
                Settings::Webhook(WebhookSettings::default())
            }
            (Some(_), None, Some(Settings::Function(_))) => {
                problems.push(Problem::new(
                    "destination.webhook",
                    "this destination is a function; the kind is fixed at creation",
                ));
                Settings::Webhook(WebhookSettings::default())
            }
            (None, None, Some(Settings::Function(_))) => {
                problems.push(Problem::new("destination.function", "required"));
                Settings::Webhook(WebhookSettings::default())
            }
            (None, Some(function), current) => {
                let current = match current {
                    Some(Settings::Function(f)) => Some(f),
                    _ => None,
                };
                let runtime = self.functions.functions();
                Settings::Function(function_settings(function, current, runtime, problems).await)
            }
            (webhook, None, current) => {
                let current = match current {
                    Some(Settings::Webhook(w)) => Some(w),
                    _ => None,
                };
                Settings::Webhook(webhook_settings(webhook, current, &self.policy, problems))
            }
        }
    }

    /// Creates a destination; `id` may be empty (a fresh id is chosen).
    pub async fn create(
        &self,
        id: &str,
        name: &str,
        input: DestinationInput,
    ) -> Result<StoredDestination> {
        let mut problems = Vec::new();
        if !id.is_empty() {
            fields::check_id("destination.id", id, &mut problems);
        }
        fields::check_name("destination.name", name, &mut problems);
        let settings = self.settings(input, None, &mut problems).await;
        ServiceError::check("destination", problems)?;
        let mut record =
            DestinationRecord::new(name, settings.kind(), settings.to_json(), Utc::now());
        if !id.is_empty() {
            id.clone_into(&mut record.id);
        }
        match self.store.destinations().insert(&record).await {
            Ok(record) => Ok(StoredDestination { record, settings }),
            Err(StoreError::AlreadyExists { .. }) => Err(ServiceError::AlreadyExists(format!(
                "a destination with id '{}' or name '{}' already exists",
                record.id, record.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The destination `id`.
    pub async fn get(&self, id: &str) -> Result<StoredDestination> {
        if id.is_empty() {
            return Err(ServiceError::invalid_field("id", "required"));
        }
        StoredDestination::decode(self.store.destinations().get(id).await?)
    }

    /// Deliveries to destination `id` over `range`, by the hour; NOT_FOUND for an unknown
    /// destination.
    pub async fn stats(&self, id: &str, range: &StatsRange) -> Result<Vec<DeliveryHour>> {
        let destination = self.get(id).await?;
        Ok(self
            .store
            .batches()
            .destination_stats(&destination.record.id, range)
            .await?)
    }

    /// One page of destinations.
    pub async fn list(&self, page_size: u32, page_token: &str) -> Result<Page<StoredDestination>> {
        let page = self
            .store
            .destinations()
            .list(page_size, Some(page_token))
            .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(StoredDestination::decode)
                .collect::<Result<_>>()?,
            next_token: page.next_token,
        })
    }

    /// Replaces a destination's name and settings.
    pub async fn update(
        &self,
        id: &str,
        name: &str,
        input: DestinationInput,
    ) -> Result<StoredDestination> {
        let current = self
            .get(id)
            .await
            .map_err(|e| e.renaming_field("destination.id"))?;
        let mut problems = Vec::new();
        fields::check_name("destination.name", name, &mut problems);
        let settings = self
            .settings(input, Some(&current.settings), &mut problems)
            .await;
        ServiceError::check("destination", problems)?;
        match self
            .store
            .destinations()
            .update(&current.record.id, name, settings.to_json(), Utc::now())
            .await
        {
            Ok(record) => Ok(StoredDestination { record, settings }),
            Err(StoreError::AlreadyExists { .. }) => Err(ServiceError::AlreadyExists(format!(
                "a destination named '{name}' already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a destination no published journey sends to.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.get(id).await?;
        if let Some(journey) = self.published_user(id).await? {
            return Err(ServiceError::FailedPrecondition(format!(
                "destination '{id}' is used by published journey '{journey}'; archive the \
                 journey first"
            )));
        }
        Ok(self.store.destinations().delete(id).await?)
    }

    /// The id of a published journey that sends to destination `id`, if any.
    async fn published_user(&self, id: &str) -> Result<Option<String>> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .journeys()
                .list(Some(JourneyState::Published), 0, token.as_deref())
                .await?;
            for record in &page.items {
                if references::uses_destination(&record.definition()?, id) {
                    return Ok(Some(record.id.clone()));
                }
            }
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(None),
            }
        }
    }

    /// One page of dead letters, optionally of one destination and one journey (empty: any).
    pub async fn dead_letters(
        &self,
        destination_id: &str,
        journey_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<OutboxRecord>> {
        Ok(self
            .store
            .outbox()
            .list_dead(
                Some(destination_id).filter(|s| !s.is_empty()),
                Some(journey_id).filter(|s| !s.is_empty()),
                page_size,
                Some(page_token),
            )
            .await?)
    }

    /// Queues dead letters for delivery again; returns how many were.
    pub async fn replay(&self, ids: &[String]) -> Result<u64> {
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
        ServiceError::check("request", problems)?;
        let replayed = self.store.outbox().replay(ids, Utc::now()).await?;
        self.delivery.wake();
        Ok(replayed)
    }
}

/// Checks webhook settings; `current` supplies the secret (and the URL's credentials) when
/// the mask is sent back.
fn webhook_settings(
    input: Option<WebhookInput>,
    current: Option<&WebhookSettings>,
    policy: &AddressPolicy,
    problems: &mut Vec<Problem>,
) -> WebhookSettings {
    let Some(mut w) = input else {
        problems.push(Problem::new("destination.webhook", "required"));
        return WebhookSettings::default();
    };
    if let Some(c) = current
        && w.url == mask_url_credentials(&c.url)
    {
        w.url.clone_from(&c.url);
    }
    check_url(&w.url, policy, problems);
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
    let timeout = webhook_timeout(w.timeout, problems);
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
        url: w.url,
        headers: w.headers.into_iter().collect(),
        signing_secret,
        // Stored resolved, so a later change of the default does not move existing ones.
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// An absolute http(s) URL whose host the address policy does not refuse outright, and no
/// credentials mask in it (the mask only stands for stored credentials in the URL unchanged).
fn check_url(url: &str, policy: &AddressPolicy, problems: &mut Vec<Problem>) {
    const FIELD: &str = "destination.webhook.url";
    let shown = mask_url_credentials(url);
    let http_ok = url.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    let parsed = url::Url::parse(url).ok().filter(|_| http_ok);
    let Some(parsed) = parsed else {
        problems.push(Problem::new(
            FIELD,
            format!("'{shown}' is not an absolute http:// or https:// URL"),
        ));
        return;
    };
    if parsed.username().contains(CREDENTIALS_MASK)
        || parsed
            .password()
            .is_some_and(|p| p.contains(CREDENTIALS_MASK))
    {
        problems.push(Problem::new(
            FIELD,
            "the credentials mask is only accepted with the stored URL unchanged; give the \
             credentials to change the URL",
        ));
        return;
    }
    if let Err(why) = policy.check_url(&parsed) {
        problems.push(Problem::new(FIELD, format!("'{shown}' is refused: {why}")));
    }
}

/// The timeout to store: the default when unset or zero, refused above the maximum.
fn webhook_timeout(
    timeout: Option<Result<Duration, &'static str>>,
    problems: &mut Vec<Problem>,
) -> Duration {
    match timeout {
        None => WebhookSettings::DEFAULT_TIMEOUT,
        Some(Ok(d)) if d.is_zero() => WebhookSettings::DEFAULT_TIMEOUT,
        Some(Ok(d)) if d <= WebhookSettings::MAX_TIMEOUT => d,
        Some(Ok(_)) => {
            problems.push(Problem::new(
                "destination.webhook.timeout",
                format!("at most {}s", WebhookSettings::MAX_TIMEOUT.as_secs()),
            ));
            WebhookSettings::DEFAULT_TIMEOUT
        }
        Some(Err(why)) => {
            problems.push(Problem::new("destination.webhook.timeout", why));
            WebhookSettings::DEFAULT_TIMEOUT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> AddressPolicy {
        AddressPolicy::default()
    }

    fn input(secret: &str, timeout: Option<Result<Duration, &'static str>>) -> WebhookInput {
        WebhookInput {
            url: "https://hooks.example.com/in".to_owned(),
            headers: vec![("x-api-key".to_owned(), "k".to_owned())],
            signing_secret: secret.to_owned(),
            timeout,
        }
    }

    #[test]
    fn the_mask_keeps_the_stored_secret_only_on_update() {
        let stored = WebhookSettings {
            signing_secret: "s3cret".to_owned(),
            ..WebhookSettings::default()
        };
        let mut problems = Vec::new();
        let kept = webhook_settings(
            Some(input(MASK, None)),
            Some(&stored),
            &open(),
            &mut problems,
        );
        assert_eq!(
            (kept.signing_secret.as_str(), problems.len()),
            ("s3cret", 0)
        );

        let created = webhook_settings(Some(input(MASK, None)), None, &open(), &mut problems);
        assert_eq!(created.signing_secret, "");
        assert_eq!(problems[0].path, "destination.webhook.signing_secret");
    }

    #[test]
    fn timeouts_default_and_are_capped() {
        let mut problems = Vec::new();
        let unset = webhook_settings(Some(input("", None)), None, &open(), &mut problems);
        assert_eq!(unset.timeout_ms, 10_000);
        let zero = webhook_settings(
            Some(input("", Some(Ok(Duration::ZERO)))),
            None,
            &open(),
            &mut problems,
        );
        assert_eq!(zero.timeout_ms, 10_000);
        assert!(problems.is_empty());
        webhook_settings(
            Some(input("", Some(Ok(Duration::from_secs(61))))),
            None,
            &open(),
            &mut problems,
        );
        assert_eq!(
            problems[0].to_string(),
            "destination.webhook.timeout: at most 60s"
        );
    }

    #[test]
    fn urls_and_headers_are_checked() {
        let mut problems = Vec::new();
        let bad = WebhookInput {
            url: "/relative".to_owned(),
            headers: vec![("bad name".to_owned(), "v".to_owned())],
            ..WebhookInput::default()
        };
        webhook_settings(Some(bad), None, &open(), &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "destination.webhook.url",
                "destination.webhook.headers[bad name]"
            ]
        );
        let mut problems = Vec::new();
        webhook_settings(None, None, &open(), &mut problems);
        assert_eq!(problems[0].path, "destination.webhook");
    }

    #[test]
    fn masked_url_credentials_keep_the_stored_url_only_when_unchanged() {
        let stored = WebhookSettings {
            url: "https://user:s3cret@hooks.example.com/in".to_owned(),
            ..WebhookSettings::default()
        };
        let masked = WebhookInput {
            url: "https://user:********@hooks.example.com/in".to_owned(),
            ..WebhookInput::default()
        };
        let mut problems = Vec::new();
        let kept = webhook_settings(Some(masked.clone()), Some(&stored), &open(), &mut problems);
        assert_eq!(
            (kept.url.as_str(), problems.len()),
            (stored.url.as_str(), 0)
        );
        // The mask elsewhere (another host, or on create) is refused: it stands for nothing.
        let moved = WebhookInput {
            url: "https://user:********@elsewhere.example.com/in".to_owned(),
            ..WebhookInput::default()
        };
        webhook_settings(Some(moved), Some(&stored), &open(), &mut problems);
        webhook_settings(Some(masked), None, &open(), &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].message.contains("credentials mask"),
            "{problems:?}"
        );
    }
}
