//! The partition log between replicas, on NATS JetStream.
//!
//! One stream (say `journeys`) holds every partition; partition `p` is the subject
//! `journeys.ev.<p>` (never a profile id: the subject count stays `P`). A front publishes each
//! input into its partition with a message id; the partition's owner reads the partition in order
//! from the sequence after the last one it committed, and trims what it has committed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), journeys_log::LogError> {
//! use futures::StreamExt;
//! use journeys_log::PartitionLog;
//!
//! let log = PartitionLog::connect("nats://127.0.0.1:4222", "journeys", 64).await?;
//! let published = log.publish(3, "web:msg-1", "payload".into()).await?;
//! let mut entries = log.read(3, published.seq).await?;
//! if let Some(entry) = entries.next().await {
//!     let entry = entry?;
//!     assert_eq!(entry.msg_id, "web:msg-1");
//! }
//! log.trim(3, published.seq + 1).await?;
//! # Ok(()) }
//! ```
//!
//! # What it guarantees
//!
//! - **Acknowledged means stored.** [`PartitionLog::publish`] returns only after JetStream's
//!   publish acknowledgement: the entry is in the stream (file storage, the configured
//!   replicas) with the returned sequence.
//! - **One entry per message id within the duplicate window** (default two minutes): a
//!   re-publish of the same id answers the first entry's sequence with
//!   [`Published::duplicate`] set, and adds nothing. Past the window, deduplication is the
//!   caller's (the engine keeps a dedupe table).
//! - **Per-partition order.** A [`Reader`] yields a partition's entries in stream order,
//!   sequences strictly increasing and never below the requested start, without gaps except
//!   for what was trimmed. It needs no acknowledgements: progress is the caller's to keep
//!   (the engine commits `last_seq` with the effects), so a new reader resumes anywhere.
//! - **Failures are classified.** [`LogError::Unavailable`] means NATS did not answer in time
//!   (down, restarting, partitioned): retry later, answer clients `UNAVAILABLE`. Other variants
//!   are not worth retrying as is.
//!
//! # What it does not guarantee
//!
//! - **No order across partitions**, and sequences are the stream's: a partition's sequences
//!   increase but skip the other partitions' entries.
//! - **No exclusive reader.** Any number of readers may read a partition; that only one owner
//!   applies it is the store's fence, not the log's.
//! - **A publish that timed out may still have been stored.** Re-publishing with the same id
//!   is the safe answer (within the duplicate window it is detected).
//! - **Trimming is the caller's.** Entries stay until [`PartitionLog::trim`]; the stream has no
//!   age or size limit, so an owner that never trims grows the stream.
//! - **Cleanup of readers is prompt but best effort.** A dropped reader deletes its server-side
//!   consumer in the background; if that fails (NATS down), the server removes the consumer
//!   after 30 s of inactivity.

mod error;
mod log;
mod reader;

pub use error::LogError;
pub use log::{
    DEFAULT_DUPLICATE_WINDOW, DEFAULT_REQUEST_TIMEOUT, LogConfig, Notices, PartitionLog, Published,
    Record,
};
pub use reader::{Entry, Reader};
