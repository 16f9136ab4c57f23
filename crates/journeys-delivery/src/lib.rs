//! Outbox dispatcher and webhook client (in progress).
