//! Mapping engine (see SPEC.md section 5).
