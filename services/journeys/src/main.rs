//! `journeys`: the one command a newcomer needs.
//!
//! - `journeys dev` runs every role in one process on embedded SQLite
//!   (`./journeys-dev.db` by default), with the demo webhook sink: gRPC on 127.0.0.1:50051,
//!   HTTP on 127.0.0.1:8088.
//! - `journeys serve --roles control-plane,data-plane,scheduler,delivery` runs any set of roles
//!   (all by default) over the configured store.
//! - `journeys migrate` applies pending store migrations and exits.
//! - `journeys <noun> <verb>` (`journey`, `events`, `destination`, `source`, `audience`,
//!   `catalog`, `instance`, `profile`, `dead-letters`) are the operators' commands, clients of
//!   the gRPC API ([`journeys::ctl`]).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use journeys::cli::{self, SchedulerArgs};
use journeys::{Node, Role, Roles};
use journeys_runtime::config::{self, ConfigArgs, Service};
use journeys_store::Store;

#[derive(Parser)]
#[command(
    version,
    about = "Journeys: event-triggered journeys, self-hosted",
    after_help = "\
Examples:
  journeys dev                                           # everything in one process, on SQLite
  journeys journey apply -f examples/abandoned-checkout.json
  journeys journey list -o json
  journeys events send --write-key \"$WRITE_KEY\" -f events.jsonl

Client commands connect to --addr (JOURNEYS_ADDR, default http://127.0.0.1:50051) with --token
(JOURNEYS_ADMIN_TOKEN). Exit codes: 0 done, 1 refused or failed, 2 bad usage or invalid input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process on embedded SQLite (development and demos).
    Dev {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run any set of roles in one process over the configured store.
    Serve {
        /// The roles this process runs (comma-separated)
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "control-plane,data-plane,scheduler,delivery"
        )]
        roles: Vec<Role>,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Apply pending store migrations to the configured database and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    #[command(flatten)]
    Client(journeys::ctl::Command),
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Dev { config: args } => dev(&args).await?,
        Command::Serve {
            roles,
            config: args,
            scheduler,
        } => serve(&roles, &args, &scheduler).await?,
        Command::Migrate { config: args } => migrate(&args).await?,
        Command::Client(command) => return Ok(journeys::ctl::run(command).await),
    }
    Ok(ExitCode::SUCCESS)
}

async fn dev(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = config::load(Service::Dev, args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    cli::run(Node::dev(config), Service::Dev.name()).await?;
    Ok(())
}

async fn serve(roles: &[Role], args: &ConfigArgs, scheduler: &SchedulerArgs) -> anyhow::Result<()> {
    let roles = Roles::of(roles);
    let config = config::load(Service::Node, args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        println!("# roles = {roles}");
        if roles.contains(Role::Scheduler) {
            println!("{}", scheduler.print_line());
        }
        return Ok(());
    }
    let node =
        Node::new(config.clone(), roles).with_scheduler_config(scheduler.scheduler_config(&config));
    cli::run(node, Service::Node.name()).await?;
    Ok(())
}

async fn migrate(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = config::load(Service::Dev, args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let store = Store::connect(&config.database_url)
        .await
        .context("cannot connect to the database")?;
    let pending = store.pending_migrations().await?;
    store.migrate().await?;
    if pending.is_empty() {
        println!("the database is up to date");
    } else {
        for name in pending {
            println!("applied {name}");
        }
    }
    Ok(())
}
