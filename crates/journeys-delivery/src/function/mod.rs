//! Destination functions: user JavaScript with Segment's handler names (`onTrack`,
//! `onIdentify`…), run in-process by an embedded QuickJS engine under hard limits.
//!
//! **Pool.** [`FunctionRuntime`] keeps `workers` threads, each owning one QuickJS runtime that
//! lives as long as the thread: no engine start-up per invocation. A worker keeps the contexts
//! of the functions it ran last (the code evaluated once, keyed by a hash of the code), so a
//! warm invocation is a function call. Contexts of different code never share globals; calls
//! of one function on one worker may see what an earlier call left in its globals (as on
//! Segment, where a function's container is reused).
//!
//! **Limits.** CPU time per invocation (an interrupt handler stops a loop), memory per worker
//! runtime (QuickJS's allocator limit: an allocation past it throws), stack size, the
//! invocation's wall-clock timeout (fetches included), the fetch response size, fetches per
//! invocation and captured log lines. A worker whose runtime hit the CPU or memory limit is
//! rebuilt before its next job, so no half-finished state survives.
//!
//! **Sandbox.** The contexts have the ECMAScript built-ins only: no module loader, no
//! `require`, no file system, no `process`, no timers. The one way out is `fetch`, which goes
//! through the webhooks' HTTP client and address policy and adds `Idempotency-Key: <message
//! id>` unless the function sets it.
//!
//! **Errors.** A thrown `RetryError` and a timeout are retried under the destination's retry
//! policy; every other error is final (dead letter with the error and the logs).

mod worker;

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::client::WebhookClient;

/// The handlers a function may define, by the event `type` they receive.
pub const HANDLERS: &[(&str, &str)] = &[
    ("track", "onTrack"),
    ("identify", "onIdentify"),
    ("page", "onPage"),
    ("screen", "onScreen"),
    ("group", "onGroup"),
    ("alias", "onAlias"),
    ("delete", "onDelete"),
];

/// The handler that receives `payload`: by its `type`; `onTrack` when it has none (a send
/// step's default payload is a track; a mapping may leave the type out).
#[must_use]
pub fn handler_for(payload: &Value) -> &'static str {
    let kind = payload
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("track");
    HANDLERS
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(kind))
        .map_or("onTrack", |(_, h)| h)
}

/// Hard limits of every invocation. Operator settings ([`crate::DeliveryConfig::functions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLimits {
    /// Worker threads, each with its own engine: invocations run at most this many at once.
    /// A worker waits for its invocation's fetches, so there are more workers than cores
    /// (JavaScript itself is short: the CPU limit bounds it).
    pub workers: usize,
    /// CPU time one invocation may use running JavaScript (waiting for fetches not counted).
    pub cpu_time: Duration,
    /// Memory of one worker's engine, all its cached functions together.
    pub memory_bytes: usize,
    /// JavaScript stack size (deep recursion throws past it).
    pub stack_bytes: usize,
    /// Longest response body a `fetch` accepts; a longer one rejects the fetch.
    pub fetch_body_bytes: usize,
    /// Fetches one invocation may start.
    pub max_fetches: usize,
    /// `console` lines kept per invocation (later ones are counted, not kept).
    pub max_log_lines: usize,
    /// Characters kept of one `console` line.
    pub max_log_line_chars: usize,
    /// Functions whose evaluated code a worker keeps.
    pub cached_functions: usize,
    /// Workers one function (one code) may occupy at once; its further invocations wait
    /// without taking a worker, so a function whose fetches hang cannot hold up the others.
    /// 0 is the default: all but a quarter of the workers (at least one left to the others
    /// when there are two or more).
    pub worker_share: usize,
}

impl FunctionLimits {
    /// [`FunctionLimits::worker_share`] with its default applied, at least 1.
    #[must_use]
    pub fn share(&self) -> usize {
        let workers = self.workers.max(1);
        match self.worker_share {
            0 => workers - (workers / 4).max(usize::from(workers > 1)),
            n => n.min(workers),
        }
        .max(1)
    }
}

impl Default for FunctionLimits {
    fn default() -> Self {
        Self {
            workers: 4 * std::thread::available_parallelism().map_or(2, usize::from),
            cpu_time: Duration::from_secs(1),
            memory_bytes: 64 * 1024 * 1024,
            stack_bytes: 512 * 1024,
            fetch_body_bytes: 1024 * 1024,
            max_fetches: 20,
            max_log_lines: 100,
            max_log_line_chars: 1000,
            cached_functions: 32,
            worker_share: 0,
        }
    }
}

/// How an invocation failed, which decides what the dispatcher does with the send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// `RetryError`, a timeout, or the engine being unavailable: retried under the policy.
    Retry,
    /// Any other thrown error, a limit, code that does not compile: dead letter.
    Final,
}

/// What a function threw, or why it was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The error's `name` (`RetryError`, `ValidationError`, `TypeError`…), or one of ours:
    /// `TimeoutError`, `CpuLimitError`, `MemoryLimitError`, `SyntaxError` (code does not
    /// compile), `InternalError`.
    pub name: String,
    pub message: String,
    pub class: ErrorClass,
}

impl FunctionError {
    fn new(name: &str, message: impl Into<String>, class: ErrorClass) -> Self {
        Self {
            name: name.to_owned(),
            message: message.into(),
            class,
        }
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// One `fetch` a function made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    pub method: String,
    pub url: String,
    /// The response status; `None` when there was no response.
    pub status: Option<u16>,
    /// Why there was no response (refused address, timeout, body too large…).
    pub error: Option<String>,
}

/// Everything one invocation did.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationReport {
    /// The handler's resolved value (JSON; `None` for `undefined`), or its error.
    pub result: Result<Option<Value>, FunctionError>,
    /// `console` lines, `level: text`.
    pub logs: Vec<String>,
    pub fetches: Vec<FetchRecord>,
    /// From the worker taking the job to its end.
    pub duration: Duration,
}

/// A function's code with its cache key.
#[derive(Debug, Clone)]
pub struct FunctionCode {
    source: Arc<str>,
    key: [u8; 32],
}

impl FunctionCode {
    #[must_use]
    pub fn new(source: &str) -> Self {
        Self {
            source: Arc::from(source),
            key: Sha256::digest(source.as_bytes()).into(),
        }
    }

    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// One call of a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub code: FunctionCode,
    /// The payload a webhook would get; picks the handler ([`handler_for`]).
    pub payload: Value,
    /// The handler's `settings` argument.
    pub settings: Value,
    /// Sent as `Idempotency-Key` on fetches that set none: the same on every attempt.
    pub message_id: String,
    /// Wall-clock limit of the invocation, fetches included.
    pub timeout: Duration,
}

enum Job {
    Invoke(Box<Invocation>, oneshot::Sender<InvocationReport>),
    Check(
        FunctionCode,
        oneshot::Sender<Result<Vec<String>, FunctionError>>,
    ),
}

/// The pool of engine workers. Cheap to clone; the workers stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct FunctionRuntime {
    jobs: mpsc::Sender<Job>,
    limits: Arc<FunctionLimits>,
    shares: Arc<Shares>,
}

/// Each function's share of the workers: a semaphore of [`FunctionLimits::share`] permits per
/// code, held from before an invocation is queued until it ends. Kept only while in use.
#[derive(Debug)]
struct Shares {
    permits: usize,
    by_code: Mutex<HashMap<[u8; 32], Arc<Semaphore>>>,
}

impl Shares {
    /// Waits for a worker of `code`'s share; the permit is given back by [`Shares::release`].
    async fn acquire(&self, code: &FunctionCode) -> (Arc<Semaphore>, Option<OwnedSemaphorePermit>) {
        let semaphore = Arc::clone(
            self.lock()
                .entry(code.key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits))),
        );
        // The semaphore is never closed: an error cannot happen, and would only mean no wait.
        let permit = Arc::clone(&semaphore).acquire_owned().await.ok();
        (semaphore, permit)
    }

    /// Gives the permit back and forgets `code`'s semaphore once nobody else holds it.
    fn release(
        &self,
        code: &FunctionCode,
        semaphore: &Arc<Semaphore>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        drop(permit);
        let mut by_code = self.lock();
        // Clones are made under this lock only: the map's and ours mean no one else waits.
        if Arc::strong_count(semaphore) == 2 {
            by_code.remove(&code.key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Semaphore>>> {
        // The map is valid whatever a panicking holder did: entries are whole.
        self.by_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for FunctionRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionRuntime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FunctionRuntime {
    /// Starts the workers. Fetches run on the Tokio runtime current at this call.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub(crate) fn start(limits: FunctionLimits, client: &WebhookClient) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let handle = tokio::runtime::Handle::current();
        let limits = Arc::new(limits);
        for n in 0..limits.workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let limits = Arc::clone(&limits);
            let client = client.clone();
            let handle = handle.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("journeys-fn-{n}"))
                .spawn(move || worker::run(&receiver, &limits, &client, &handle));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a function worker thread");
            }
        }
        let shares = Arc::new(Shares {
            permits: limits.share(),
            by_code: Mutex::new(HashMap::new()),
        });
        Self {
            jobs,
            limits,
            shares,
        }
    }

    /// The limits the workers apply.
    #[must_use]
    pub fn limits(&self) -> &FunctionLimits {
        &self.limits
    }

    /// Runs one invocation on a free worker, once its function has one of its share
    /// ([`FunctionLimits::worker_share`]) free.
    pub async fn invoke(&self, invocation: Invocation) -> InvocationReport {
        let code = invocation.code.clone();
        let (semaphore, permit) = self.shares.acquire(&code).await;
        let report = self.run(invocation).await;
        self.shares.release(&code, &semaphore, permit);
        report
    }

    async fn run(&self, invocation: Invocation) -> InvocationReport {
        let (reply, answer) = oneshot::channel();
        let unavailable = || InvocationReport {
            result: Err(FunctionError::new(
                "InternalError",
                "the function engine is unavailable",
                ErrorClass::Retry,
            )),
            logs: Vec::new(),
            fetches: Vec::new(),
            duration: Duration::ZERO,
        };
        if self
            .jobs
            .send(Job::Invoke(Box::new(invocation), reply))
            .is_err()
        {
            return unavailable();
        }
        answer.await.unwrap_or_else(|_| unavailable())
    }

    /// Evaluates `code` in a fresh context (under the CPU and memory limits) and returns the
    /// handlers it defines.
    ///
    /// # Errors
    /// The code does not compile, or throws or hits a limit while its top level runs.
    pub async fn check(&self, code: &str) -> Result<Vec<String>, FunctionError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || {
            FunctionError::new(
                "InternalError",
                "the function engine is unavailable",
                ErrorClass::Retry,
            )
        };
        self.jobs
            .send(Job::Check(FunctionCode::new(code), reply))
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }
}

#[cfg(test)]
mod tests;
