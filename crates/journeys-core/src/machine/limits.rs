//! The limits the state machine applies while instances run. Operators set them (SPEC.md §7:
//! every number called a default is a setting); the defaults here are SPEC's numbers and what
//! tests and simulations use when they configure nothing.

use serde::{Deserialize, Serialize};

/// Return-to-start passes one hold-until step allows per instance unless configured.
pub const DEFAULT_MAX_RETURN_TO_START_PASSES: u32 = 100;

/// Longest unique-identifier value unless configured, in characters (Segment's limit).
pub const DEFAULT_MAX_UNIQUE_VALUE_CHARS: usize = 500;

/// Per-instance limits of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceLimits {
    /// Passes through a return-to-start hold branch before the branch continues onward to its
    /// next step instead.
    pub max_return_to_start_passes: u32,
    /// Longest unique-identifier value an entry event may carry, in characters; a longer one
    /// is skipped as `unique_identifier_too_long`.
    pub max_unique_value_chars: usize,
}

impl InstanceLimits {
    /// SPEC.md's numbers.
    pub const DEFAULT: InstanceLimits = InstanceLimits {
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
        max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
    };
}

impl Default for InstanceLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
