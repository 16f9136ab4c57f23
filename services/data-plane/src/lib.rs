//! journeys-data-plane (in progress).
