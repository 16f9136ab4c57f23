//! The journey domain model: what an operator defines and what the engine reads.
//!
//! These types are the single internal representation of a journey. The gRPC edge converts
//! protobuf messages into them (reporting conversion problems with the same paths validation
//! uses), the store persists them as JSON, and the state machine interprets them.

mod event;
mod filter;
mod journey;
mod step;

pub use event::{Event, EventType};
pub use filter::{Condition, ConditionOp, ConditionSubject, FilterMatch, PropertyFilter};
pub use journey::{EntryRule, EntryTrigger, ExitRule, JourneyDefinition, JourneyMeta};
pub use step::{
    DataSplitBranch, DataSplitStep, DelayStep, HoldBranch, HoldUntilStep, RandomBranch,
    RandomSplitStep, SendAction, SendSpec, SendStep, Step, StepKind,
};

/// Free-form JSON as it arrives in events, traits and mappings.
pub type Json = serde_json::Value;

/// An instant in UTC. The core never reads a clock: callers pass `now` in.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
