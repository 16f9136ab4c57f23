//! The pure heart of Journeys: the journey model and its validation, filters and conditions,
//! the mapping engine, the per-instance state machine and simulation.
//!
//! Nothing here performs I/O or reads a clock: every decision is a function of its inputs,
//! `now` included, so the data plane, the scheduler and `SimulateJourney` agree by construction.

pub mod eval;
pub mod index;
pub mod machine;
pub mod mapping;
pub mod model;
pub mod partition;
pub mod path;
pub mod payload;
pub mod problem;
pub mod profile;
pub mod simulate;
pub mod validate;

pub use problem::Problem;
