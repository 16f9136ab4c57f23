//! Waiting for something another task does: [`eventually`] polls a probe until it yields a
//! value, and fails the test with a message when the timeout passes first.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] asks its probe again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields a value and returns that value.
///
/// The probe returns `Option<T>` (`None`: not yet) or `Result<Option<T>, E>` when looking can
/// fail. Under a paused tokio clock ([`crate::clock`]) the waits between polls advance virtual
/// time.
///
/// # Panics
/// After `timeout`, naming `what`; and at once when the probe returns an error.
pub async fn eventually<P, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> P::Value
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await.into_poll() {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(err) => panic!("while waiting for {what}: {err:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a probe of [`eventually`] answers.
pub trait Probe {
    /// The value waited for.
    type Value;
    /// Why looking failed.
    type Error: Debug;
    /// `Ok(Some(_))` when ready, `Ok(None)` when not yet.
    ///
    /// # Errors
    /// When the probe could not look.
    fn into_poll(self) -> Result<Option<Self::Value>, Self::Error>;
}

impl<T> Probe for Option<T> {
    type Value = T;
    type Error = std::convert::Infallible;

    fn into_poll(self) -> Result<Option<T>, Self::Error> {
        Ok(self)
    }
}

impl<T, E: Debug> Probe for Result<Option<T>, E> {
    type Value = T;
    type Error = E;

    fn into_poll(self) -> Result<Option<T>, E> {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{Duration, eventually};

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_the_probe_yields() {
        let polls = AtomicU32::new(0);
        let value = eventually("the third poll", Duration::from_secs(1), || async {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn fails_after_the_timeout() {
        eventually("nothing", Duration::from_secs(1), || async { None::<()> }).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "while waiting for a broken probe")]
    async fn fails_at_once_on_a_probe_error() {
        eventually("a broken probe", Duration::from_secs(1), || async {
            Err::<Option<()>, _>("no connection")
        })
        .await;
    }
}
