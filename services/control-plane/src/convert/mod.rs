//! Conversion between the `journeys.v1` protobuf messages and the domain types of
//! `journeys-core`, one module per direction.
//!
//! Incoming definitions are converted leniently: every problem the protobuf shape allows but the
//! domain cannot express (an unset step kind, a missing duration, re-entry without an
//! identifier…) is reported with the same path syntax validation uses, so that one call returns
//! every problem at once.

pub mod event;
pub mod journey_in;
pub mod journey_out;
pub mod json;
