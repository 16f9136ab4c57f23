//! `journeys.v1.SchedulerService`: a thin adapter from gRPC to the store's timer statistics and
//! the timer loop's counters.

use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_proto::v1::scheduler_service_server::SchedulerService;
use journeys_proto::v1::{
    GetSchedulerStatsRequest, GetSchedulerStatsResponse, ListTimersRequest, ListTimersResponse,
    Timer,
};
use journeys_runtime::error::ApiError;
use journeys_store::{Store, StoreError, TimerRecord};
use tonic::{Request, Response, Status};

use crate::timer_loop::StatsHandle;

/// The scheduler's gRPC service. Counts (pending, overdue, next due) come from the store and so
/// cover every replica; `fired_total` and lateness are this process's since it started.
#[derive(Clone)]
pub(crate) struct SchedulerApi {
    store: Store,
    stats: StatsHandle,
}

impl SchedulerApi {
    pub(crate) fn new(store: Store, stats: StatsHandle) -> Self {
        Self { store, stats }
    }
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn get_scheduler_stats(
        &self,
        _request: Request<GetSchedulerStatsRequest>,
    ) -> Result<Response<GetSchedulerStatsResponse>, Status> {
        let stored = self
            .store
            .timers()
            .stats(Utc::now())
            .await
            .map_err(store_error)?;
        let fired = self.stats.stats();
        Ok(Response::new(GetSchedulerStatsResponse {
            pending_timers: stored.pending,
            overdue_timers: stored.overdue,
            next_due_at: stored.next_due_at.map(timestamp),
            fired_total: i64::try_from(fired.fired_total).unwrap_or(i64::MAX),
            lateness_p50: Some(duration(fired.lateness_p50())),
            lateness_p99: Some(duration(fired.lateness_p99())),
            wait_p99: Some(duration(fired.wait.quantile(0.99))),
            apply_p99: Some(duration(fired.apply_time.quantile(0.99))),
        }))
    }

    async fn list_timers(
        &self,
        request: Request<ListTimersRequest>,
    ) -> Result<Response<ListTimersResponse>, Status> {
        let instance_id = request.into_inner().instance_id;
        if instance_id.trim().is_empty() {
            return Err(ApiError::invalid_field("instance_id", "must not be empty").into());
        }
        let timers = self
            .store
            .timers()
            .list_for_instance(&instance_id)
            .await
            .map_err(store_error)?;
        Ok(Response::new(ListTimersResponse {
            timers: timers.into_iter().map(timer).collect(),
        }))
    }
}

fn timer(record: TimerRecord) -> Timer {
    Timer {
        id: record.id,
        instance_id: record.instance_id,
        kind: record.kind,
        step_key: record.step_key,
        due_at: Some(timestamp(record.due_at)),
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9, so it fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    }
}

/// Store failures as the API's small set of codes; detail stays in the logs.
fn store_error(error: StoreError) -> Status {
    let api = match error {
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::Unavailable("the store is unavailable; retry later".to_owned())
        }
        other => ApiError::internal(other),
    };
    api.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_convert_exactly() {
        let d = duration(Duration::from_micros(1_250_500));
        assert_eq!((d.seconds, d.nanos), (1, 250_500_000));
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_000).expect("valid");
        let t = timestamp(at);
        assert_eq!((t.seconds, t.nanos), (1_800_000_000, 123_456_000));
    }
}
