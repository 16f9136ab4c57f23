//! `outbox`: sends queued in the same transaction as the transition that made them.

// The entity derives expand to code that names many prelude items unqualified.
#[allow(clippy::wildcard_imports)]
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    pub step_key: String,
    pub destination_id: String,
    pub message_id: String,
    pub method: String,
    pub path: String,
    pub payload: Json,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub claimed_until: Option<DateTimeUtc>,
    /// The dispatcher holding the claim (`outbox_claimants`), if it keeps a lease.
    pub claimed_by: Option<String>,
    pub traceparent: Option<String>,
    pub sent_at: Option<DateTimeUtc>,
    pub dead_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
