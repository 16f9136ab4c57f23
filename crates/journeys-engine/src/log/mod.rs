//! The partition log between fronts and owners when the nodes share a NATS JetStream stream
//! (SCALE-OUT.md §3). Without it (one process, `journeys dev`) a front hands events straight to
//! the local lanes; with it:
//!
//! - a **front** ([`LogFront`], the data plane's event sink) validates each event, publishes it
//!   into its profile's partition (`Nats-Msg-Id` = its `messageId`), and answers the client only
//!   once the partition's owner announced the commit that applied it (a commit notice), falling
//!   back to the partition's `log_seq` in the store when a notice does not come;
//! - an **owner** (an engine started with [`crate::Engine::start_logged`]) runs one reader per
//!   partition it holds, from the `log_seq` its previous owner committed, hands what it reads
//!   to the partition's lane, commits the entries' sequences with their effects, announces each
//!   commit, and trims what it committed.
//!
//! So any node accepts any event, one node applies each partition, in log order, and a node
//! that dies loses nothing acknowledged: its successor resumes at `log_seq + 1`.

mod entry;
mod front;
pub(crate) mod handed;
mod pump;

pub use front::{FrontConfig, LogFront};
pub(crate) use pump::Pump;
