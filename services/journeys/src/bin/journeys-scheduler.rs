//! `journeys-scheduler`: a node with the scheduler and delivery roles — durable timers and
//! housekeeping, with an outbox dispatcher so that sends produced by timers go out at once.

use clap::Parser;
use journeys::cli::SchedulerArgs;
use journeys_runtime::config::{ConfigArgs, Service};

/// Journeys scheduler: fires delay and hold-until timers on time (any number of replicas on
/// one database), runs the housekeeping jobs, and serves journeys.v1.SchedulerService.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,

    #[command(flatten)]
    scheduler: SchedulerArgs,
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = cli.scheduler;
    journeys::cli::run_service(
        Service::Scheduler,
        &cli.config,
        Some(args.print_line()),
        |node| {
            let scheduler = args.scheduler_config(node.config());
            node.with_scheduler_config(scheduler)
        },
    )
    .await?;
    Ok(())
}
