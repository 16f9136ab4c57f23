//! `timeline`: every transition of an instance, append-only.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "timeline")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub instance_id: String,
    pub profile_id: String,
    pub at: DateTimeUtc,
    pub step_key: String,
    pub kind: String,
    pub cause: String,
    pub detail: Json,
    /// Set only on a row that stands for an instance never stored (see
    /// `TimelineEntry::stand_in_for`).
    pub journey_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
