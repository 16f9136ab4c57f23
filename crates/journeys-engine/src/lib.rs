//! The evaluator runtime shared by the data plane and the scheduler.
//!
//! Ingestion front ends (gRPC stream, unary calls, the Segment-compatible HTTP API) hand
//! validated events to an [`EventSink`]; the engine applies them per profile, in order, in
//! micro-batched transactions, and acknowledges each event only after its effects committed.

mod ack;

pub use ack::{Ack, AckStatus, EventSink};
