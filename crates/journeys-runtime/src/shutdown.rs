//! Graceful shutdown: OS signals and a trigger shared by every server of a process.
//!
//! The first SIGINT or SIGTERM starts a graceful drain; a second one exits at once with code
//! 130, for an operator who does not want to wait.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// Exit code of the immediate exit on a second signal (128 + SIGINT, as shells report Ctrl-C).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Completes on the first SIGINT or SIGTERM, and from then on exits the process at once on the
/// next one.
///
/// Must run inside a Tokio runtime.
pub async fn signal() {
    let first = next_signal().await;
    tracing::info!(
        signal = first,
        "shutdown requested, draining; send the signal again to exit at once"
    );
    tokio::spawn(async {
        let second = next_signal().await;
        tracing::warn!(signal = second, "second shutdown signal, exiting at once");
        std::process::exit(FORCED_EXIT_CODE);
    });
}

/// Waits for SIGINT or SIGTERM and returns its name. Tokio keeps its handlers installed once
/// registered, so after the first signal only this code can end the process.
async fn next_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};

        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    result = tokio::signal::ctrl_c() => ctrl_c_or_pending(result).await,
                    _ = terminate.recv() => "SIGTERM",
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the process");
                ctrl_c_or_pending(tokio::signal::ctrl_c().await).await
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c_or_pending(tokio::signal::ctrl_c().await).await
    }
}

/// Failing to listen for Ctrl-C must not look like a Ctrl-C (that would stop the server at
/// once), so the failure is logged and the wait continues forever.
async fn ctrl_c_or_pending(result: std::io::Result<()>) -> &'static str {
    match result {
        Ok(()) => "SIGINT",
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending().await
        }
    }
}

/// A one-way switch that stops several servers together: each server gets [`Shutdown::wait`],
/// and one [`Shutdown::trigger`] (or the signal handler of [`Shutdown::on_signal`]) stops all.
///
/// Clones share the same switch.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A switch not yet triggered.
    #[must_use]
    pub fn new() -> Shutdown {
        let (sender, _) = watch::channel(false);
        Shutdown {
            sender: Arc::new(sender),
        }
    }

    /// A switch that SIGINT/SIGTERM triggers (see [`signal`]). Must be called inside a Tokio
    /// runtime.
    #[must_use]
    pub fn on_signal() -> Shutdown {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether [`Shutdown::trigger`] has been called.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once the switch is triggered (at once if it already was). Each call gives an
    /// independent future, so any number of servers can wait. The future holds no handle that
    /// could trigger, and if every [`Shutdown`] is dropped untriggered it never completes:
    /// dropping the switch must not stop the servers.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            if receiver.wait_for(|triggered| *triggered).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_trigger_releases_every_waiter() {
        let shutdown = Shutdown::new();
        let first = tokio::spawn(shutdown.wait());
        let second = tokio::spawn(shutdown.clone().wait());
        tokio::task::yield_now().await;
        assert!(!first.is_finished() && !second.is_finished());
        assert!(!shutdown.is_triggered());

        shutdown.clone().trigger();
        tokio::time::timeout(Duration::from_secs(5), async {
            first.await.expect("first waiter");
            second.await.expect("second waiter");
        })
        .await
        .expect("waiters finish after the trigger");
        assert!(shutdown.is_triggered());

        // Waiting after the trigger completes at once; triggering again is harmless.
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("late waiter completes");
    }

    #[tokio::test]
    async fn dropping_the_switch_does_not_stop_waiters() {
        let wait = Shutdown::new().wait();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), wait)
                .await
                .is_err(),
            "a dropped, untriggered switch must not complete"
        );
    }
}
