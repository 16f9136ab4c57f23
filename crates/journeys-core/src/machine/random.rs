//! Deterministic randomized splits.
//!
//! The draw is a SHA-256 of (journey id, subject, step key), where the subject is the instance
//! id — or the profile id with `same_branch_on_reentry`. SHA-256 rather than `DefaultHasher`:
//! its output is specified, so every process, version and replay draws the same branch. The
//! step key is part of the input so that two randomized splits in one journey are independent.

use sha2::{Digest, Sha256};

use super::instance::Instance;
use crate::model::RandomSplitStep;

/// Resolution of a draw: basis points, so percentages map exactly.
const BUCKETS: u64 = 10_000;

/// A bucket in `0..10_000`, uniform and deterministic in its inputs.
pub fn random_bucket(journey_id: &str, subject: &str, step_key: &str) -> u32 {
    let mut h = Sha256::new();
    for part in [journey_id, subject, step_key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    // The modulo bias of 2^64 mod 10^4 is below 10^-15: irrelevant.
    let bucket = u64::from_be_bytes(first) % BUCKETS;
    u32::try_from(bucket).unwrap_or(0)
}

/// The index of the branch `instance` takes at split `step_key`; `None` when there is no
/// branch. Percentages are cumulative in branch order; should they total less than 100
/// (validation forbids it) the remainder goes to the last branch.
pub fn random_branch(
    journey_id: &str,
    instance: &Instance,
    step_key: &str,
    split: &RandomSplitStep,
) -> Option<usize> {
    if split.branches.is_empty() {
        return None;
    }
    let subject = if split.same_branch_on_reentry {
        &instance.profile_id
    } else {
        &instance.id
    };
    let bucket = random_bucket(journey_id, subject, step_key);
    let mut upper = 0u32;
    for (i, branch) in split.branches.iter().enumerate() {
        upper = upper.saturating_add(branch.percent.saturating_mul(100));
        if bucket < upper {
            return Some(i);
        }
    }
    Some(split.branches.len() - 1)
}
