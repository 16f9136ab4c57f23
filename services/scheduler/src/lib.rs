//! journeys-scheduler (in progress).
