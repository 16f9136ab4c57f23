//! `watermarks`: one fairness-watermark heartbeat per data-plane replica.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "watermarks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub replica_id: String,
    pub watermark: DateTimeUtc,
    pub heartbeat_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
