//! `instances`: one run of a journey for one profile.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub journey_id: String,
    pub journey_revision: i64,
    pub profile_id: String,
    pub unique_value: Option<String>,
    pub state: String,
    pub current_step: Option<String>,
    pub waiting_event: Option<String>,
    pub context: Json,
    pub state_blob: Json,
    pub passes: i32,
    pub version: i64,
    pub entered_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
    #[sea_orm(unique)]
    pub active_key: Option<String>,
    /// Nullable only because a column added to existing rows cannot portably be NOT NULL;
    /// the store always writes it.
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
