//! `journeys-scheduler`: a node with the scheduler and delivery roles — durable timers and
//! housekeeping, with an outbox dispatcher so that sends produced by timers go out at once.

use clap::Parser;
use journeys::cli::SchedulerArgs;
use journeys::{Node, Roles};
use journeys_runtime::config::{self, ConfigArgs, Service};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::load(Service::Scheduler, &cli.config)?;
    if cli.config.print_config {
        print!("{}", config.to_toml());
        println!("{}", cli.scheduler.print_line());
        return Ok(());
    }
    let scheduler = cli.scheduler.scheduler_config(&config);
    let node =
        Node::new(config, Roles::of_service(Service::Scheduler)).with_scheduler_config(scheduler);
    journeys::cli::run(node, Service::Scheduler.name()).await?;
    Ok(())
}
