//! What the binaries of this package share after parsing their command line: the scheduler's
//! own flags ([`SchedulerArgs`]) and [`run`], which sets up telemetry, binds and serves a
//! [`Node`] until SIGINT/SIGTERM.

use journeys_runtime::config::{self, Config, ConfigArgs, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_scheduler::SchedulerConfig;

use crate::node::{Error, Node, Roles};

/// Flags of the scheduler role (`journeys-scheduler`, `journeys serve`), beside the shared
/// configuration flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Cron expression with seconds (UTC) on which the housekeeping jobs run; empty disables
    /// them (when another replica runs them)
    #[arg(
        long,
        env = "JOURNEYS_HOUSEKEEPING_SCHEDULE",
        value_name = "CRON",
        default_value = journeys_scheduler::DEFAULT_HOUSEKEEPING_SCHEDULE
    )]
    pub housekeeping_schedule: String,
}

impl SchedulerArgs {
    /// The scheduler settings for `config` with these flags applied.
    #[must_use]
    pub fn scheduler_config(&self, config: &Config) -> SchedulerConfig {
        let mut scheduler = SchedulerConfig::from_config(config);
        scheduler
            .housekeeping
            .schedule
            .clone_from(&self.housekeeping_schedule);
        scheduler
    }

    /// The line `--print-config` adds for these settings (they are not configuration keys).
    #[must_use]
    pub fn print_line(&self) -> String {
        format!(
            "# scheduler: housekeeping_schedule = {:?}",
            self.housekeeping_schedule
        )
    }
}

/// Runs `node` as this process: telemetry under `service_name`, the configured listeners, and
/// [`Node::serve`] until the first SIGINT or SIGTERM (a second one exits at once).
///
/// # Errors
/// See [`Error`].
pub async fn run(node: Node, service_name: &str) -> Result<(), Error> {
    let _telemetry = journeys_runtime::telemetry::init(node.config(), service_name)?;
    let listeners = node.bind().await?;
    let shutdown = Shutdown::on_signal();
    node.serve(listeners, shutdown.wait()).await
}

/// The main of a service binary: loads `service`'s configuration, prints it and returns with
/// `--print-config` (then `extra_config`'s lines, if any), else runs a node with the service's
/// roles, shaped by `with` (e.g. the scheduler's own settings).
///
/// # Errors
/// See [`Error`].
pub async fn run_service(
    service: Service,
    args: &ConfigArgs,
    extra_config: Option<String>,
    with: impl FnOnce(Node) -> Node,
) -> Result<(), Error> {
    let config = config::load(service, args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        if let Some(extra) = extra_config {
            println!("{extra}");
        }
        return Ok(());
    }
    let node = with(Node::new(config, Roles::of_service(service)));
    run(node, service.name()).await
}
