//! `identity_refusals`: links not made because the id already belongs to another profile.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_refusals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub identity: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub refused_profile_id: String,
    pub profile_id: String,
    pub refused_at: DateTimeUtc,
    pub refusals: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
