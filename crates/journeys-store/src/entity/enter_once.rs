//! `enter_once`: profiles that entered an `ENTER_ONCE` journey, forever.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "enter_once")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub journey_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub profile_id: String,
    pub entered_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
