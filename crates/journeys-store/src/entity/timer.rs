//! `timers`: durable delay and hold-until deadlines.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "timers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    pub due_at: DateTimeUtc,
    pub kind: String,
    pub step_key: String,
    pub claimed_until: Option<DateTimeUtc>,
    /// The profile partition (`None` for timers written before partitions existed).
    pub partition_id: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
