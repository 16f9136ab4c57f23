//! Conversion between the `journeys.v1` messages and the domain types of `journeys-core`, one
//! module per direction: the one home of these conversions for ingest, the control plane and
//! clients.
//!
//! Incoming definitions are converted leniently: every problem the protobuf shape allows but the
//! domain cannot express (an unset step kind, a missing duration, re-entry without an
//! identifier, a NaN…) is reported with the same path syntax validation uses, so that one call
//! returns every problem at once.

pub mod event;
pub mod journey_in;
pub mod journey_out;
pub mod json;
