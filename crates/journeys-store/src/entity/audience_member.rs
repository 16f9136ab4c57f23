//! `audience_members`: one row per (audience, profile) membership.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audience_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub audience_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub added_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
