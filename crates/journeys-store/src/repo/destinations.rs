//! Destinations: where send steps deliver (webhooks and destination functions).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::entity::destination::{self, Column};
use crate::error::StoreError;
use crate::page::{self, Page};
use crate::repo::micros;

const ENTITY: &str = "destination";

/// What kind of endpoint a destination is; decides how `settings` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// An HTTP endpoint ("Actions"-style webhook).
    Webhook,
    /// User JavaScript run in the delivery's sandbox (a "destination function").
    Function,
}

impl DestinationKind {
    /// The stored form (`webhook`, `function`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Function => "function",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "webhook" => Ok(Self::Webhook),
            "function" => Ok(Self::Function),
            other => Err(StoreError::Internal(format!(
                "unknown destination kind {other:?}"
            ))),
        }
    }
}

impl fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `settings` JSON of a webhook destination: written by the control plane, read by the
/// delivery client. One type with one set of defaults, so the two cannot drift apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    /// Base URL (`http` or `https`, with a host); a send's path is appended.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HMAC key for `Journeys-Signature`; empty disables signing. Never shown back to clients.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signing_secret: String,
    /// Request timeout in milliseconds; 0 (or absent) means [`WebhookSettings::DEFAULT_TIMEOUT`].
    #[serde(default)]
    pub timeout_ms: u64,
}

impl WebhookSettings {
    /// Request timeout of a destination that sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest request timeout a destination may set.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

    /// The settings stored in `record`.
    ///
    /// # Errors
    /// The JSON does not have the settings' shape (a corrupt row or a foreign writer).
    pub fn of(record: &DestinationRecord) -> Result<Self, serde_json::Error> {
        serde_json::from_value(record.settings.clone())
    }

    /// The settings as the `settings` column stores them.
    #[must_use]
    pub fn to_json(&self) -> Value {
        // A struct of strings, a string map and an integer always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The timeout to use: `default` when none is set, never more than `max`.
    #[must_use]
    pub fn timeout(&self, default: Duration, max: Duration) -> Duration {
        match self.timeout_ms {
            0 => default,
            ms => Duration::from_millis(ms),
        }
        .min(max)
    }
}

/// The `settings` JSON of a destination function: written by the control plane, read by the
/// function runtime of the delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionSettings {
    /// JavaScript source defining one or more handlers (`onTrack`, `onIdentify`…).
    pub code: String,
    /// Settings the handlers receive as their second argument, shown back to clients.
    #[serde(default)]
    pub settings: serde_json::Map<String, Value>,
    /// Write-only settings (API keys): merged into `settings` at run time, never shown back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Time limit of one invocation in milliseconds, fetches included; 0 (or absent) means
    /// [`FunctionSettings::DEFAULT_TIMEOUT`].
    #[serde(default)]
    pub timeout_ms: u64,
}

impl FunctionSettings {
    /// Invocation time limit of a function that sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Longest invocation time limit a function may set.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

    /// The settings stored in `record`.
    ///
    /// # Errors
    /// The JSON does not have the settings' shape (a corrupt row or a foreign writer).
    pub fn of(record: &DestinationRecord) -> Result<Self, serde_json::Error> {
        serde_json::from_value(record.settings.clone())
    }

    /// The settings as the `settings` column stores them.
    #[must_use]
    pub fn to_json(&self) -> Value {
        // Strings, a JSON object, a string map and an integer always serialise.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// What the handlers receive as `settings`: the plain settings with the secrets over them.
    #[must_use]
    pub fn runtime_settings(&self) -> Value {
        let mut merged = self.settings.clone();
        for (name, value) in &self.secrets {
            merged.insert(name.clone(), Value::String(value.clone()));
        }
        Value::Object(merged)
    }

    /// The time limit to use: `default` when none is set, never more than `max`.
    #[must_use]
    pub fn timeout(&self, default: Duration, max: Duration) -> Duration {
        match self.timeout_ms {
            0 => default,
            ms => Duration::from_millis(ms),
        }
        .min(max)
    }
}

/// A stored destination.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRecord {
    /// `UUIDv7` text.
    pub id: String,
    /// Unique among destinations.
    pub name: String,
    pub kind: DestinationKind,
    /// Kind-specific settings (URL, headers, signing secret), opaque to the store.
    pub settings: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DestinationRecord {
    /// A new destination with a fresh `UUIDv7` id.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        kind: DestinationKind,
        settings: Value,
        now: DateTime<Utc>,
    ) -> Self {
        let now = micros(now);
        Self {
            id: crate::new_id(),
            name: name.into(),
            kind,
            settings,
            created_at: now,
            updated_at: now,
        }
    }
}

impl TryFrom<destination::Model> for DestinationRecord {
    type Error = StoreError;

    fn try_from(m: destination::Model) -> Result<Self, StoreError> {
        Ok(Self {
            kind: DestinationKind::parse(&m.kind)?,
            id: m.id,
            name: m.name,
            settings: m.settings,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

/// Repository of destinations; obtained from [`crate::Store::destinations`].
#[derive(Debug, Clone, Copy)]
pub struct Destinations<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Destinations<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a new destination and returns it as stored.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id or the name is taken.
    pub async fn insert(
        &self,
        destination: &DestinationRecord,
    ) -> Result<DestinationRecord, StoreError> {
        let mut stored = destination.clone();
        stored.created_at = micros(stored.created_at);
        stored.updated_at = micros(stored.updated_at);
        let model = destination::ActiveModel {
            id: Set(stored.id.clone()),
            name: Set(stored.name.clone()),
            kind: Set(stored.kind.as_str().to_owned()),
            settings: Set(stored.settings.clone()),
            created_at: Set(stored.created_at),
            updated_at: Set(stored.updated_at),
        };
        destination::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        Ok(stored)
    }

    /// The destination with `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<DestinationRecord, StoreError> {
        find(self.db, id).await
    }

    /// Destinations in id order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(
        &self,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<DestinationRecord>, StoreError> {
        let size = page::effective_size(page_size);
        let mut query = destination::Entity::find()
            .order_by_asc(Column::Id)
            .limit(size + 1);
        if let Some(after) = page::token(page_token) {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .all(self.db)
            .await?
            .into_iter()
            .map(DestinationRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page::finish(rows, size, |d| d.id.clone()))
    }

    /// Replaces name and settings; the kind is fixed at creation.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::AlreadyExists`] when the new name is taken.
    pub async fn update(
        &self,
        id: &str,
        name: &str,
        settings: Value,
        now: DateTime<Utc>,
    ) -> Result<DestinationRecord, StoreError> {
        let txn = self.db.begin().await?;
        let result = destination::Entity::update_many()
            .col_expr(Column::Name, Expr::value(name))
            .col_expr(Column::Settings, Expr::value(settings))
            .col_expr(Column::UpdatedAt, Expr::value(micros(now)))
            .filter(Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY, id));
        }
        let updated = find(&txn, id).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// Deletes the destination.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let result = destination::Entity::delete_by_id(id).exec(self.db).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY, id));
        }
        Ok(())
    }
}

async fn find<C: ConnectionTrait>(db: &C, id: &str) -> Result<DestinationRecord, StoreError> {
    destination::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found(ENTITY, id))?
        .try_into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn function_settings_round_trip_and_merge_secrets_over_settings() {
        let settings = FunctionSettings {
            code: "async function onTrack(e, s) {}".to_owned(),
            settings: json!({"url": "https://h/in", "apiKey": "plain"})
                .as_object()
                .unwrap()
                .clone(),
            secrets: BTreeMap::from([("apiKey".to_owned(), "s3cret".to_owned())]),
            timeout_ms: 0,
        };
        let record = DestinationRecord::new(
            "f",
            DestinationKind::Function,
            settings.to_json(),
            Utc::now(),
        );
        assert_eq!(FunctionSettings::of(&record).unwrap(), settings);
        assert_eq!(
            settings.runtime_settings(),
            json!({"url": "https://h/in", "apiKey": "s3cret"})
        );
        let (default, max) = (
            FunctionSettings::DEFAULT_TIMEOUT,
            FunctionSettings::MAX_TIMEOUT,
        );
        assert_eq!(settings.timeout(default, max), default);
        assert_eq!(
            DestinationKind::parse("function").unwrap(),
            DestinationKind::Function
        );
    }

    #[test]
    fn webhook_settings_round_trip_and_default() {
        let settings = WebhookSettings {
            url: "https://h/in".to_owned(),
            headers: BTreeMap::from([("x-k".to_owned(), "v".to_owned())]),
            signing_secret: String::new(),
            timeout_ms: 2500,
        };
        let stored = settings.to_json();
        assert_eq!(
            stored,
            json!({"url": "https://h/in", "headers": {"x-k": "v"}, "timeout_ms": 2500})
        );
        let record = DestinationRecord::new("d", DestinationKind::Webhook, stored, Utc::now());
        assert_eq!(WebhookSettings::of(&record).unwrap(), settings);

        let bare: WebhookSettings = serde_json::from_value(json!({"url": "http://h/"})).unwrap();
        let (default, max) = (
            WebhookSettings::DEFAULT_TIMEOUT,
            WebhookSettings::MAX_TIMEOUT,
        );
        assert_eq!(bare.timeout(default, max), default);
        let long = WebhookSettings {
            timeout_ms: 3_600_000,
            ..bare
        };
        assert_eq!(long.timeout(default, max), max);
    }
}
