//! Items an owner hands on to another partition (identity resolution): published into the
//! receiving profile's partition before the batch that decided it commits. A batch replayed
//! after a crash publishes the same records under the same message ids, which the log's
//! duplicate window drops; past the window, what arrives twice is harmless (an event is a
//! duplicate by its `messageId`, a second merge finds nothing pending, a timer or exit finds
//! nothing left to do).

use journeys_core::partition::partition_of;
use journeys_log::{PartitionLog, Record};
use journeys_store::StoreError;

use super::entry::Entry;
use crate::job::Item;

/// One hand-over: the item at `seq` of `partition` goes to profile `to`, after a merge when
/// `merge`.
pub(crate) struct HandOver<'a> {
    pub partition: u32,
    pub seq: u64,
    pub item: &'a Item,
    /// The id the item reached (the linked id).
    pub from: &'a str,
    pub to: &'a str,
    pub merge: bool,
}

/// Publishes the hand-overs, each into its receiving profile's partition, in order.
pub(crate) async fn publish(
    log: &PartitionLog,
    partitions: u32,
    hand_overs: &[HandOver<'_>],
) -> Result<(), StoreError> {
    let mut records = Vec::with_capacity(hand_overs.len() * 2);
    for h in hand_overs {
        let source = format!("{}:{}", h.partition, h.seq);
        let partition = partition_of(h.to, partitions);
        if h.merge {
            let merge = Entry::Merge {
                profile_id: h.to.to_owned(),
                from: h.from.to_owned(),
            };
            records.push(record(partition, format!("merge:{source}"), &merge)?);
        }
        let entry = entry_of(h.item.handed_on(h.to), h.to);
        records.push(record(partition, format!("fwd:{source}"), &entry)?);
    }
    if records.is_empty() {
        return Ok(());
    }
    log.publish_batch(&records).await.map_err(|err| {
        StoreError::Unavailable(format!("handing items on through the log: {err}"))
    })?;
    Ok(())
}

/// Tells the owners of `ids` to drop them from memory (ids whose links were deleted).
pub(crate) async fn forget(
    log: &PartitionLog,
    partitions: u32,
    ids: &[String],
) -> Result<(), StoreError> {
    let mut by_partition: std::collections::BTreeMap<u32, Vec<String>> =
        std::collections::BTreeMap::new();
    for id in ids {
        by_partition
            .entry(partition_of(id, partitions))
            .or_default()
            .push(id.clone());
    }
    let request = uuid::Uuid::new_v4().simple().to_string();
    let mut records = Vec::with_capacity(by_partition.len());
    for (partition, profile_ids) in by_partition {
        let msg_id = format!("unlink:{request}:{partition}");
        records.push(record(partition, msg_id, &Entry::Forget { profile_ids })?);
    }
    log.publish_batch(&records)
        .await
        .map_err(|err| StoreError::Unavailable(err.to_string()))?;
    Ok(())
}

fn record(partition: u32, msg_id: String, entry: &Entry) -> Result<Record, StoreError> {
    let payload = entry
        .encode()
        .map_err(|err| StoreError::Internal(format!("an entry does not encode: {err}")))?;
    Ok(Record {
        partition,
        msg_id,
        payload,
    })
}

/// The log entry of an item handed on to profile `to`.
fn entry_of(item: Item, to: &str) -> Entry {
    match item {
        Item::Event(event) | Item::Link(event) | Item::Relay { event, .. } => Entry::Event(event),
        Item::Timer(timer) => Entry::Timer((&timer).into()),
        Item::Terminate {
            instance_id,
            reason,
        } => Entry::Terminate {
            profile_id: to.to_owned(),
            instance_id,
            reason,
        },
        Item::Delete { suppress } => Entry::Delete {
            profile_id: to.to_owned(),
            suppress,
        },
        Item::Merge { from } => Entry::Merge {
            profile_id: to.to_owned(),
            from,
        },
    }
}
