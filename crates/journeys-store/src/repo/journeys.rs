//! Journey definitions: CRUD with optimistic concurrency on `revision`, and lifecycle state.

use std::fmt;

use chrono::{DateTime, Utc};
use journeys_core::machine::Journey;
use journeys_core::model::{JourneyDefinition, JourneyMeta};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::Value;

use crate::entity::journey::{self, Column};
use crate::error::StoreError;
use crate::page::{self, Page};
use crate::repo::micros;

const ENTITY: &str = "journey";

/// Lifecycle state of a journey: `DRAFT` → `PUBLISHED` → `ARCHIVED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JourneyState {
    /// Editable; never receives events.
    Draft,
    /// Live and immutable.
    Published,
    /// No new entries.
    Archived,
}

impl JourneyState {
    /// The stored form (`DRAFT`, `PUBLISHED`, `ARCHIVED`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Published => "PUBLISHED",
            Self::Archived => "ARCHIVED",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "DRAFT" => Ok(Self::Draft),
            "PUBLISHED" => Ok(Self::Published),
            "ARCHIVED" => Ok(Self::Archived),
            other => Err(StoreError::Internal(format!(
                "unknown journey state {other:?}"
            ))),
        }
    }
}

impl fmt::Display for JourneyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored journey.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyRecord {
    /// `UUIDv7` text.
    pub id: String,
    /// Unique among journeys.
    pub name: String,
    pub description: String,
    pub state: JourneyState,
    /// Bumped by every write; the token for optimistic concurrency.
    pub revision: i64,
    /// The serialized domain definition; the store does not look inside.
    pub definition: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    /// The journey this one replaced when it was published ([`Journeys::replace`]).
    pub replaces: Option<String>,
    /// Whether profiles with an instance still active in the replaced journey are kept from
    /// entering this one.
    pub replace_excludes_active: bool,
}

impl JourneyRecord {
    /// The stored form of a definition (the `definition` column).
    #[must_use]
    pub fn encode(definition: &JourneyDefinition) -> Value {
        // Definitions are plain data (strings, numbers, maps): serialising cannot fail.
        serde_json::to_value(definition).unwrap_or(Value::Null)
    }

    /// The authored definition: the one decoding of the `definition` column, for the control
    /// plane and the engine alike.
    ///
    /// # Errors
    /// `Internal` when the column does not decode (a corrupt row or an incompatible upgrade).
    pub fn definition(&self) -> Result<JourneyDefinition, StoreError> {
        serde_json::from_value(self.definition.clone()).map_err(|e| {
            StoreError::Internal(format!(
                "journey {} has an unreadable definition: {e}",
                self.id
            ))
        })
    }

    /// Identity and revision, as payloads and instances record them.
    #[must_use]
    pub fn meta(&self) -> JourneyMeta {
        JourneyMeta {
            id: self.id.clone(),
            version: self.revision,
            name: self.name.clone(),
        }
    }

    /// The runnable journey of this record.
    ///
    /// # Errors
    /// As [`JourneyRecord::definition`].
    pub fn journey(&self) -> Result<Journey, StoreError> {
        Ok(Journey::new(self.meta(), self.definition()?))
    }

    /// A new draft at revision 1 with a fresh `UUIDv7` id.
    #[must_use]
    pub fn new_draft(
        name: impl Into<String>,
        description: impl Into<String>,
        definition: Value,
        now: DateTime<Utc>,
    ) -> Self {
        let now = micros(now);
        Self {
            id: crate::new_id(),
            name: name.into(),
            description: description.into(),
            state: JourneyState::Draft,
            revision: 1,
            definition,
            created_at: now,
            updated_at: now,
            published_at: None,
            archived_at: None,
            replaces: None,
            replace_excludes_active: false,
        }
    }
}

impl TryFrom<journey::Model> for JourneyRecord {
    type Error = StoreError;

    fn try_from(m: journey::Model) -> Result<Self, StoreError> {
        Ok(Self {
            state: JourneyState::parse(&m.state)?,
            id: m.id,
            name: m.name,
            description: m.description,
            revision: m.revision,
            definition: m.definition,
            created_at: m.created_at,
            updated_at: m.updated_at,
            published_at: m.published_at,
            archived_at: m.archived_at,
            replaces: m.replaces,
            replace_excludes_active: m.replace_excludes_active,
        })
    }
}

/// The editable part of a journey, replaced as a whole by [`Journeys::update`].
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyChanges {
    pub name: String,
    pub description: String,
    pub definition: Value,
}

/// Repository of journeys; obtained from [`crate::Store::journeys`].
#[derive(Debug, Clone, Copy)]
pub struct Journeys<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Journeys<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a new journey and returns it as stored (timestamps at microsecond precision).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id or the name is taken.
    pub async fn insert(&self, journey: &JourneyRecord) -> Result<JourneyRecord, StoreError> {
        let mut stored = journey.clone();
        stored.created_at = micros(stored.created_at);
        stored.updated_at = micros(stored.updated_at);
        stored.published_at = stored.published_at.map(micros);
        stored.archived_at = stored.archived_at.map(micros);
        let model = journey::ActiveModel {
            id: Set(stored.id.clone()),
            name: Set(stored.name.clone()),
            description: Set(stored.description.clone()),
            state: Set(stored.state.as_str().to_owned()),
            revision: Set(stored.revision),
            definition: Set(stored.definition.clone()),
            created_at: Set(stored.created_at),
            updated_at: Set(stored.updated_at),
            published_at: Set(stored.published_at),
            archived_at: Set(stored.archived_at),
            replaces: Set(stored.replaces.clone()),
            replace_excludes_active: Set(stored.replace_excludes_active),
        };
        journey::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        Ok(stored)
    }

    /// The journey with `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<JourneyRecord, StoreError> {
        find(self.db, id).await
    }

    /// The journey named `name`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get_by_name(&self, name: &str) -> Result<JourneyRecord, StoreError> {
        journey::Entity::find()
            .filter(Column::Name.eq(name))
            .one(self.db)
            .await?
            .ok_or_else(|| StoreError::not_found(ENTITY, name))?
            .try_into()
    }

    /// Journeys in id order (creation order, as ids are `UUIDv7`), optionally of one state.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(
        &self,
        state: Option<JourneyState>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<JourneyRecord>, StoreError> {
        let size = page::effective_size(page_size);
        let mut query = journey::Entity::find()
            .order_by_asc(Column::Id)
            .limit(size + 1);
        if let Some(state) = state {
            query = query.filter(Column::State.eq(state.as_str()));
        }
        if let Some(after) = page::token(page_token) {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .all(self.db)
            .await?
            .into_iter()
            .map(JourneyRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page::finish(rows, size, |j| j.id.clone()))
    }

    /// Replaces name, description and definition, if the stored revision is still
    /// `expected_revision`; bumps the revision and `updated_at`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when the revision moved on;
    /// [`StoreError::AlreadyExists`] when the new name is taken.
    pub async fn update(
        &self,
        id: &str,
        expected_revision: i64,
        changes: JourneyChanges,
        now: DateTime<Utc>,
    ) -> Result<JourneyRecord, StoreError> {
        let txn = self.db.begin().await?;
        let result = journey::Entity::update_many()
            .col_expr(Column::Name, Expr::value(changes.name))
            .col_expr(Column::Description, Expr::value(changes.description))
            .col_expr(Column::Definition, Expr::value(changes.definition))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(micros(now)))
            .filter(Column::Id.eq(id))
            .filter(Column::Revision.eq(expected_revision))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        if result.rows_affected == 0 {
            let current = find(&txn, id).await?;
            return Err(StoreError::Conflict(format!(
                "journey {id} is at revision {}, not {expected_revision}",
                current.revision
            )));
        }
        let updated = find(&txn, id).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// Moves the journey to `state`, stamping `published_at` / `archived_at` with `now` when
    /// entering those states; bumps the revision so a concurrent [`Journeys::update`] loses.
    ///
    /// Which transitions are allowed is the caller's rule, not the store's.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn set_state(
        &self,
        id: &str,
        state: JourneyState,
        now: DateTime<Utc>,
    ) -> Result<JourneyRecord, StoreError> {
        let now = micros(now);
        let txn = self.db.begin().await?;
        let mut update = journey::Entity::update_many()
            .col_expr(Column::State, Expr::value(state.as_str()))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(id));
        let stamp = match state {
            JourneyState::Draft => None,
            JourneyState::Published => Some(Column::PublishedAt),
            JourneyState::Archived => Some(Column::ArchivedAt),
        };
        if let Some(column) = stamp {
            update = update.col_expr(column, Expr::value(now));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY, id));
        }
        let updated = find(&txn, id).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// Publishes draft `id` in place of published journey `replaced`, in one transaction: the
    /// new one is published naming the one it replaces (and whether profiles active there are
    /// kept out), the replaced one archived. Returns both records, the new one first.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when either is missing; [`StoreError::Conflict`] when `id` is
    /// no longer a draft or `replaced` no longer published (a concurrent publish or archive:
    /// nothing changed).
    pub async fn replace(
        &self,
        id: &str,
        replaced: &str,
        exclude_active: bool,
        now: DateTime<Utc>,
    ) -> Result<(JourneyRecord, JourneyRecord), StoreError> {
        let now = micros(now);
        let txn = self.db.begin().await?;
        let published = journey::Entity::update_many()
            .col_expr(Column::State, Expr::value(JourneyState::Published.as_str()))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .col_expr(Column::PublishedAt, Expr::value(now))
            .col_expr(Column::Replaces, Expr::value(replaced))
            .col_expr(Column::ReplaceExcludesActive, Expr::value(exclude_active))
            .filter(Column::Id.eq(id))
            .filter(Column::State.eq(JourneyState::Draft.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        let archived = journey::Entity::update_many()
            .col_expr(Column::State, Expr::value(JourneyState::Archived.as_str()))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .col_expr(Column::ArchivedAt, Expr::value(now))
            .filter(Column::Id.eq(replaced))
            .filter(Column::State.eq(JourneyState::Published.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        let new = find(&txn, id).await?;
        let old = find(&txn, replaced).await?;
        if published == 0 || archived == 0 {
            txn.rollback().await?;
            let (which, state) = if published == 0 {
                (id, "a draft")
            } else {
                (replaced, "published")
            };
            return Err(StoreError::Conflict(format!(
                "journey {which} is no longer {state}"
            )));
        }
        txn.commit().await?;
        Ok((new, old))
    }

    /// A cheap stamp of the non-draft journeys: `(how many, latest updated_at)`. It changes
    /// whenever a journey is published, archived or deleted, so the data plane polls it to know
    /// when to reload its cache.
    ///
    /// # Errors
    /// Database errors.
    pub async fn published_stamp(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row: Option<(i64, Option<DateTime<Utc>>)> = journey::Entity::find()
            .select_only()
            .column_as(Expr::col(Column::Id).count(), "n")
            .column_as(Expr::col(Column::UpdatedAt).max(), "latest")
            .filter(Column::State.ne(JourneyState::Draft.as_str()))
            .into_tuple()
            .one(self.db)
            .await?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Deletes the journey.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let result = journey::Entity::delete_by_id(id).exec(self.db).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY, id));
        }
        Ok(())
    }
}

async fn find<C: ConnectionTrait>(db: &C, id: &str) -> Result<JourneyRecord, StoreError> {
    journey::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found(ENTITY, id))?
        .try_into()
}
