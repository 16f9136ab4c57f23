//! `--embedded`: the node `journeys serve` runs (every role, through [`journeys::Node`], the
//! composition root every Journeys process starts through) on 127.0.0.1:0 in this process, on
//! its own tokio runtime and threads (as a separate process would be), over a fresh database
//! that is removed again afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use journeys::{Listeners, Node, Roles};
use journeys_runtime::config::{Config, DEV_DESTINATION_ALLOW, Service};
use journeys_store::{create_database, drop_database, remove_sqlite_files};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A database created for one run.
#[derive(Debug, Clone)]
pub enum FreshDb {
    Sqlite {
        path: PathBuf,
    },
    MySql {
        server_url: String,
        database: String,
    },
}

impl FreshDb {
    /// Creates the database described by `url` (see `--database-url`) and returns it with the
    /// URL to connect to.
    pub async fn create(url: &str) -> anyhow::Result<(FreshDb, String)> {
        let suffix = unique_suffix();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let path = rest.split('?').next().unwrap_or_default();
            let path = if path.is_empty() {
                std::env::temp_dir().join(format!("journeys-bench-{suffix}.db"))
            } else {
                PathBuf::from(path)
            };
            anyhow::ensure!(
                !path.exists(),
                "{} exists already; the load generator needs a fresh database",
                path.display()
            );
            let url = format!("sqlite://{}?mode=rwc", path.display());
            Ok((FreshDb::Sqlite { path }, url))
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let server_url = url.replacen("mariadb:", "mysql:", 1);
            let database = format!("journeys_bench_{suffix}");
            let url = create_database(&server_url, &database)
                .await
                .with_context(|| {
                    format!(
                        "cannot create the benchmark database on {}",
                        redact(&server_url)
                    )
                })?;
            Ok((
                FreshDb::MySql {
                    server_url,
                    database,
                },
                url,
            ))
        } else {
            anyhow::bail!("--database-url must start with sqlite: or mysql:")
        }
    }

    /// Deletes the file(s) or drops the database.
    pub async fn remove(&self) -> anyhow::Result<()> {
        match self {
            FreshDb::Sqlite { path } => Ok(remove_sqlite_files(path)?),
            FreshDb::MySql {
                server_url,
                database,
            } => Ok(drop_database(server_url, database).await?),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FreshDb::Sqlite { path } => format!("sqlite {}", path.display()),
            FreshDb::MySql { database, .. } => format!("mysql database {database}"),
        }
    }
}

/// The stack running on its own threads.
pub struct Embedded {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Embedded {
    /// Starts every role over `database_url` on a runtime with `threads` workers and waits
    /// until its gRPC health check answers SERVING.
    pub async fn start(database_url: &str, threads: usize) -> anyhow::Result<Embedded> {
        let grpc_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let http_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        grpc_listener.set_nonblocking(true)?;
        http_listener.set_nonblocking(true)?;
        let grpc = grpc_listener.local_addr()?;
        let http = http_listener.local_addr()?;
        let mut config = Config::defaults_for(Service::Node);
        config.database_url = database_url.to_owned();
        config.grpc_addr = grpc;
        config.http_addr = http;
        // The abandonment workloads hold for seconds, not the production minimum of minutes.
        config.allow_short_durations = true;
        // The load generator's webhook sink listens on loopback.
        config.destination_allow = DEV_DESTINATION_ALLOW
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let node = Node::new(config, Roles::of_service(Service::Node));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("journeys-node".to_owned())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("journeys-node")
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let grpc = tokio::net::TcpListener::from_std(grpc_listener)?;
                    let http = tokio::net::TcpListener::from_std(http_listener)?;
                    node.serve(Listeners::new(grpc, Some(http)), async {
                        let _ = stopped.await;
                    })
                    .await?;
                    Ok(())
                })
            })?;
        let mut stack = Embedded {
            grpc,
            http,
            stop: Some(stop),
            thread: Some(thread),
        };
        if let Err(err) = stack.wait_ready().await {
            let stopped = stack.stop().await;
            return Err(match stopped {
                Err(cause) => cause.context(err.to_string()),
                Ok(()) => err,
            });
        }
        Ok(stack)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..1200 {
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                anyhow::bail!("the embedded stack stopped during start-up");
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.grpc))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2))
                .connect()
                .await
            {
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if status.is_ok_and(|r| r.into_inner().status == 1) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the embedded stack did not become ready within a minute")
    }

    /// Drains and stops the stack; reports how it ended.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the embedded stack panicked"))?
    }
}

/// 12 random hex digits.
fn unique_suffix() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(12);
    hex
}

/// `url` with any password replaced, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:********{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{FreshDb, redact};

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("mysql://u:secret@h:3306/db"),
            "mysql://u:********@h:3306/db"
        );
        assert_eq!(redact("mysql://root@h:3306"), "mysql://root@h:3306");
    }

    #[tokio::test]
    async fn a_sqlite_database_is_a_fresh_temp_file_by_default() {
        let (db, url) = FreshDb::create("sqlite://").await.unwrap();
        let FreshDb::Sqlite { path } = &db else {
            panic!("sqlite expected");
        };
        assert!(url.starts_with("sqlite://"));
        assert!(url.ends_with("?mode=rwc"));
        assert!(!path.exists());
        db.remove().await.unwrap();
    }
}
