//! `journeys`: the one command a newcomer needs.
//!
//! - `journeys dev` runs every service in one process on embedded SQLite
//!   (`./journeys-dev.db` by default): gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8088.
//! - `journeys migrate` applies pending store migrations and exits.

use anyhow::Context;
use clap::{Parser, Subcommand};
use journeys_runtime::config::{self, ConfigArgs, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_store::Store;

#[derive(Parser)]
#[command(version, about = "Journeys: event-triggered journeys, self-hosted")]
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
    /// Apply pending store migrations to the configured database and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dev { config: args } => dev(&args).await,
        Command::Migrate { config: args } => migrate(&args).await,
    }
}

async fn dev(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = config::load(Service::Dev, args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let _telemetry = journeys_runtime::telemetry::init(&config, "journeys-dev")?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let shutdown = Shutdown::on_signal();
    journeys::run_dev(config, grpc, http, shutdown.wait()).await?;
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
