//! Profile partitions (SCALE-OUT.md §1): every profile belongs to one of `P` partitions, and one
//! owner at a time applies a partition. The same function serves routing, the store column and
//! (later) the log subject, so all three always agree.

/// Partitions of a deployment unless configured otherwise. Changing the number is a
/// drain-and-migrate operation: every profile may move to another partition.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// The largest number of partitions a deployment may use.
pub const MAX_PARTITIONS: u32 = 4096;

/// 64-bit FNV-1a of `bytes`: stable across processes, platforms and releases.
#[must_use]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The partition of the profile `profile_key` among `partitions` (`0` is taken as `1`).
#[must_use]
pub fn partition_of(profile_key: &str, partitions: u32) -> u32 {
    let partitions = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which fits in a u32.
    u32::try_from(fnv1a64(profile_key.as_bytes()) % partitions).unwrap_or(0)
}

/// Rendezvous (highest-random-weight) choice of the owner of `partition` among `nodes`: the
/// node with the highest hash of `(node, partition)`. Every node computes the same answer from
/// the same list, and a node joining or leaving moves only about `P / N` partitions.
#[must_use]
pub fn rendezvous_owner<'a>(partition: u32, nodes: &[&'a str]) -> Option<&'a str> {
    nodes
        .iter()
        .map(|node| {
            // FNV-1a alone barely mixes its last bytes, so the weight goes through a finalizer
            // (MurmurHash3's fmix64): every node's weights must be independent per partition.
            let weight = fmix64(fnv1a64(node.as_bytes()) ^ fmix64(u64::from(partition) + 1));
            (weight, *node)
        })
        .max()
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("user-1", 64), partition_of("user-1", 64));
        let mut used = [false; 8];
        for i in 0..256 {
            used[partition_of(&format!("user-{i}"), 8) as usize] = true;
        }
        assert!(used.iter().all(|u| *u));
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
        // FNV-1a reference value: the function must never change between releases.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn rendezvous_moves_few_partitions_when_a_node_joins() {
        let two = ["node-a", "node-b"];
        let three = ["node-a", "node-b", "node-c"];
        let mut moved = 0;
        for p in 0..64 {
            let before = rendezvous_owner(p, &two);
            let after = rendezvous_owner(p, &three);
            if before != after {
                assert_eq!(after, Some("node-c"), "only moves to the new node");
                moved += 1;
            }
        }
        assert!((10..=35).contains(&moved), "moved {moved} of 64");
        assert_eq!(rendezvous_owner(3, &[]), None);
        assert_eq!(rendezvous_owner(3, &["solo"]), Some("solo"));
    }
}
