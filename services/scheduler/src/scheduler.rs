//! [`Scheduler`]: the timer loop, the housekeeping jobs and the gRPC service over one store and
//! one engine, started and stopped together. The composition root (`journeys::node`) runs it,
//! alone or beside the other roles on their shared engine.

use std::sync::Arc;

use journeys_engine::Engine;
use journeys_proto::v1::scheduler_service_server::SchedulerServiceServer;
use journeys_runtime::auth::AdminAuth;
use journeys_store::Store;
use tokio_cron_scheduler::JobSchedulerError;

use crate::api::SchedulerApi;
use crate::config::SchedulerConfig;
use crate::housekeeping::{CronJobs, Housekeeping};
use crate::timer_loop::{TimerLoop, TimerLoopStats};
use crate::watermark::WatermarkSource;

/// A running scheduler. Dropping it without [`Scheduler::shutdown`] leaves its tasks running
/// until the runtime stops; their claims then lapse after the lease.
pub struct Scheduler {
    store: Store,
    timers: TimerLoop,
    housekeeping: Housekeeping,
    cron: Option<CronJobs>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("timers", &self.timers)
            .field("housekeeping", &self.cron.is_some())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts firing the timers of `store` through `engine`, holding hold-until timeouts back
    /// until `watermark` passes them, and schedules the housekeeping jobs (unless
    /// `config.housekeeping.schedule` is empty). Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// An invalid housekeeping cron expression, or the job scheduler failing to start.
    pub async fn start(
        store: Store,
        engine: Engine,
        watermark: impl WatermarkSource,
        config: SchedulerConfig,
    ) -> Result<Self, JobSchedulerError> {
        let housekeeping =
            Housekeeping::new(store.clone(), engine.clone(), config.housekeeping.clone());
        let schedule = config.housekeeping.schedule.trim().to_owned();
        let cron = if schedule.is_empty() {
            tracing::info!("housekeeping disabled (empty schedule)");
            None
        } else {
            Some(CronJobs::start(housekeeping.clone(), &schedule).await?)
        };
        let timers = TimerLoop::start(store.clone(), engine, Arc::new(watermark), config);
        Ok(Self {
            store,
            timers,
            housekeeping,
            cron,
        })
    }

    /// What the timer loop has done so far.
    #[must_use]
    pub fn stats(&self) -> TimerLoopStats {
        self.timers.stats()
    }

    /// The housekeeping jobs, to run them now rather than on their schedule.
    #[must_use]
    pub fn housekeeping(&self) -> &Housekeeping {
        &self.housekeeping
    }

    /// Adds `journeys.v1.SchedulerService` to `builder`, behind the admin-token check (`None`
    /// lets every call through; see [`journeys_runtime::auth::check_bind`]).
    pub fn add_services(
        &self,
        builder: &mut tonic::service::RoutesBuilder,
        admin_token: Option<String>,
    ) {
        builder.add_service(SchedulerServiceServer::with_interceptor(
            SchedulerApi::new(self.store.clone(), self.timers.stats_handle()),
            AdminAuth::new(admin_token),
        ));
    }

    /// Stops the housekeeping jobs and the timer loop; timers claimed but not fired are
    /// released for other replicas. The engine is left running (it belongs to the caller).
    pub async fn shutdown(self) {
        if let Some(cron) = self.cron {
            cron.shutdown().await;
        }
        self.timers.shutdown().await;
    }
}
