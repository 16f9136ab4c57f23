//! The event catalog: every event name ingestion has seen (with first/last time and count), plus
//! names registered by hand before any event arrived.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::catalog_event::{self, Column};
use crate::error::StoreError;
use crate::repo::{INSERT_CHUNK, micros};

const ENTITY: &str = "catalog event";

/// A stored catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEventRecord {
    pub name: String,
    /// `None` for a name registered but not yet received.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Events received with this name.
    pub count: i64,
    /// Whether an operator registered the name explicitly.
    pub registered: bool,
}

impl From<catalog_event::Model> for CatalogEventRecord {
    fn from(m: catalog_event::Model) -> Self {
        Self {
            name: m.name,
            first_seen: m.first_seen,
            last_seen: m.last_seen,
            count: m.count,
            registered: m.registered,
        }
    }
}

impl CatalogEventRecord {
    /// Adds another shard's row of the same name (`event_catalog` has a row per name and
    /// shard: batches of different lanes write different rows).
    fn merge(&mut self, other: &catalog_event::Model) {
        self.first_seen = match (self.first_seen, other.first_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count += other.count;
        self.registered |= other.registered;
    }
}

/// One record per name from shard rows ordered by name.
fn merged(rows: Vec<catalog_event::Model>) -> Vec<CatalogEventRecord> {
    let mut out: Vec<CatalogEventRecord> = Vec::new();
    for row in rows {
        match out.last_mut() {
            Some(last) if last.name == row.name => last.merge(&row),
            _ => out.push(row.into()),
        }
    }
    out
}

/// Repository of the event catalog; obtained from [`crate::Store::catalog`].
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Catalog<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every catalog entry, in name order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self) -> Result<Vec<CatalogEventRecord>, StoreError> {
        let rows = catalog_event::Entity::find()
            .order_by_asc(Column::Name)
            .all(self.db)
            .await?;
        Ok(merged(rows))
    }

    /// The entry for `name`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, name: &str) -> Result<CatalogEventRecord, StoreError> {
        let rows = catalog_event::Entity::find()
            .filter(Column::Name.eq(name))
            .all(self.db)
            .await?;
        merged(rows)
            .pop()
            .ok_or_else(|| StoreError::not_found(ENTITY, name))
    }

    /// Registers `name` so journeys can use it before any such event arrived. Idempotent; an
    /// entry that was already seen keeps its counts.
    ///
    /// # Errors
    /// Database errors.
    pub async fn register(&self, name: &str) -> Result<CatalogEventRecord, StoreError> {
        catalog_event::Entity::insert(catalog_event::ActiveModel {
            name: Set(name.to_owned()),
            shard: Set(0),
            first_seen: Set(None),
            last_seen: Set(None),
            count: Set(0),
            registered: Set(true),
        })
        .on_conflict(
            OnConflict::columns([Column::Name, Column::Shard])
                .update_column(Column::Registered)
                .to_owned(),
        )
        .exec_without_returning(self.db)
        .await?;
        self.get(name).await
    }

    /// Records received events, given as `(name, received at)`: creates missing entries and
    /// widens `first_seen`/`last_seen` and adds to `count` of existing ones, in one multi-row
    /// upsert per chunk of names (names in sorted order, so concurrent batches lock rows in the
    /// same order and cannot deadlock).
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_seen(&self, seen: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        record_seen(self.db, seen, 0).await
    }

    /// Whether `name` is in the catalog (seen or registered).
    ///
    /// # Errors
    /// Database errors.
    pub async fn contains(&self, name: &str) -> Result<bool, StoreError> {
        let n = catalog_event::Entity::find()
            .filter(Column::Name.eq(name))
            .count(self.db)
            .await?;
        Ok(n > 0)
    }

    /// The names of `names` that are not in the catalog, in the order given, without repeats.
    ///
    /// # Errors
    /// Database errors.
    pub async fn contains_all(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let unique: Vec<&str> = unique.into_iter().collect();
        let mut present = HashSet::new();
        for chunk in unique.chunks(INSERT_CHUNK) {
            let found = catalog_event::Entity::find()
                .select_only()
                .column(Column::Name)
                .filter(Column::Name.is_in(chunk.iter().copied()))
                .into_tuple::<String>()
                .all(self.db)
                .await?;
            present.extend(found);
        }
        let mut reported = HashSet::new();
        Ok(names
            .iter()
            .filter(|n| !present.contains(*n) && reported.insert(n.as_str()))
            .cloned()
            .collect())
    }
}

/// [`Catalog::record_seen`] on `db` (a connection or a transaction), in the rows of `shard`.
pub(crate) async fn record_seen<C: ConnectionTrait>(
    db: &C,
    seen: &[(String, DateTime<Utc>)],
    shard: i16,
) -> Result<(), StoreError> {
    // name -> (first, last, count) within this batch
    let mut batch: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>, i64)> = BTreeMap::new();
    for (name, at) in seen {
        let at = micros(*at);
        batch
            .entry(name.as_str())
            .and_modify(|(first, last, count)| {
                *first = (*first).min(at);
                *last = (*last).max(at);
                *count += 1;
            })
            .or_insert((at, at, 1));
    }
    let rows: Vec<_> = batch.into_iter().collect();
    let on_conflict = upsert_counts(db.get_database_backend());
    for chunk in rows.chunks(INSERT_CHUNK) {
        let models = chunk
            .iter()
            .map(|(name, (first, last, count))| catalog_event::ActiveModel {
                name: Set((*name).to_owned()),
                shard: Set(shard),
                first_seen: Set(Some(*first)),
                last_seen: Set(Some(*last)),
                count: Set(*count),
                registered: Set(false),
            });
        catalog_event::Entity::insert_many(models)
            .on_conflict(on_conflict.clone())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// `ON CONFLICT` clause that merges a batch's `(first, last, count)` into an existing entry.
/// The two dialects differ in how they name the rejected row (`VALUES(col)` / `excluded.col`)
/// and in their two-argument min/max functions.
fn upsert_counts(backend: DbBackend) -> OnConflict {
    let (least, greatest, new, q) = match backend {
        DbBackend::MySql => ("LEAST", "GREATEST", "VALUES(`{}`)", '`'),
        _ => ("min", "max", "excluded.\"{}\"", '"'),
    };
    let new = |col: &str| new.replace("{}", col);
    let widen =
        |f: &str, col: &str| format!("{f}(COALESCE({q}{col}{q}, {new}), {new})", new = new(col));
    OnConflict::columns([Column::Name, Column::Shard])
        .value(Column::FirstSeen, Expr::cust(widen(least, "first_seen")))
        .value(Column::LastSeen, Expr::cust(widen(greatest, "last_seen")))
        .value(
            Column::Count,
            Expr::cust(format!("{q}count{q} + {}", new("count"))),
        )
        .to_owned()
}
