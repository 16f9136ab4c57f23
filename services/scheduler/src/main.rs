//! `journeys-scheduler`: durable timers and housekeeping as their own process.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use journeys_runtime::config::{self, ConfigArgs, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_scheduler::SchedulerConfig;

/// Journeys scheduler: fires delay and hold-until timers on time (any number of replicas on
/// one database), runs the housekeeping jobs, and serves journeys.v1.SchedulerService.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,

    /// Days a finished instance is kept before housekeeping deletes it with its timeline
    #[arg(
        long,
        env = "JOURNEYS_INSTANCE_RETENTION_DAYS",
        value_name = "DAYS",
        default_value_t = 90
    )]
    instance_retention_days: u64,

    /// Cron expression with seconds (UTC) on which the housekeeping jobs run; empty disables
    /// them (when another replica runs them)
    #[arg(
        long,
        env = "JOURNEYS_HOUSEKEEPING_SCHEDULE",
        value_name = "CRON",
        default_value = journeys_scheduler::DEFAULT_HOUSEKEEPING_SCHEDULE
    )]
    housekeeping_schedule: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::load(Service::Scheduler, &cli.config)?;
    let mut scheduler = SchedulerConfig::from_config(&config);
    scheduler.housekeeping.instance_retention =
        Duration::from_secs(cli.instance_retention_days.saturating_mul(86_400));
    scheduler
        .housekeeping
        .schedule
        .clone_from(&cli.housekeeping_schedule);
    if cli.config.print_config {
        print!("{}", config.to_toml());
        println!(
            "# scheduler: instance_retention_days = {}, housekeeping_schedule = {:?}",
            cli.instance_retention_days, cli.housekeeping_schedule
        );
        return Ok(());
    }
    let _telemetry = journeys_runtime::telemetry::init(&config, Service::Scheduler.name())?;
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    tracing::info!(addr = %config.grpc_addr, "scheduler listening");
    let shutdown = Shutdown::on_signal();
    journeys_scheduler::serve_with(config, scheduler, listener, shutdown.wait()).await?;
    Ok(())
}
