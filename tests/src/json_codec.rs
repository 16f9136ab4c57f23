//! Proto3 JSON (what grpcurl sends) → generated message, through the descriptor set.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// Decodes `json` as the message `full_name` and re-encodes it as `T`.
pub fn decode<T: Message + Default>(
    json: &serde_json::Value,
    full_name: &str,
) -> anyhow::Result<T> {
    let pool = DescriptorPool::decode(journeys_proto::FILE_DESCRIPTOR_SET)?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("unknown message {full_name}"))?;
    let dynamic = DynamicMessage::deserialize(descriptor, json)?;
    Ok(T::decode(dynamic.encode_to_vec().as_slice())?)
}
