//! One worker thread of the [`super::FunctionRuntime`]: a QuickJS runtime, the contexts of the
//! functions it ran last, and the event loop of one invocation (run JavaScript jobs, wait for
//! fetches, settle them) under the CPU, memory and time limits.
//!
//! JavaScript only ever runs on this thread; fetches run on the Tokio runtime and come back
//! over a channel, so a function that loops never holds up an I/O thread.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rquickjs::context::EvalOptions;
use rquickjs::{Array, Context, Ctx, Function, Object, Runtime, Value};
use tokio::runtime::Handle;

use super::{
    ErrorClass, FetchRecord, FunctionCode, FunctionError, FunctionLimits, HANDLERS, Invocation,
    InvocationReport, Job, handler_for,
};
use crate::client::{FetchRequest, FetchResponse, WebhookClient};
use crate::error::DeliveryError;

const PRELUDE: &str = include_str!("prelude.js");

/// The message QuickJS gives an allocation refused by the memory limit.
const OUT_OF_MEMORY: &str = "out of memory";

/// Takes jobs until the pool is dropped.
pub(super) fn run(
    receiver: &Mutex<Receiver<Job>>,
    limits: &FunctionLimits,
    client: &WebhookClient,
    handle: &Handle,
) {
    let mut engine: Option<Engine> = None;
    loop {
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else { return };
        if engine.is_none() {
            match Engine::new(limits, client.clone(), handle.clone()) {
                Ok(fresh) => engine = Some(fresh),
                Err(err) => tracing::error!(error = %err, "could not start a function engine"),
            }
        }
        let Some(current) = engine.as_mut() else {
            let unavailable = FunctionError::new(
                "InternalError",
                "the function engine could not start",
                ErrorClass::Retry,
            );
            match job {
                Job::Invoke(_, reply) => {
                    let _ = reply.send(InvocationReport {
                        result: Err(unavailable),
                        logs: Vec::new(),
                        fetches: Vec::new(),
                        duration: Duration::ZERO,
                    });
                }
                Job::Check(_, reply) => {
                    let _ = reply.send(Err(unavailable));
                }
            }
            continue;
        };
        match job {
            Job::Invoke(invocation, reply) => {
                let report = current.invoke(&invocation);
                let _ = reply.send(report);
            }
            Job::Check(code, reply) => {
                let checked = current.check(&code);
                let _ = reply.send(checked);
            }
        }
        if current.spoiled {
            // A limit was hit or an invocation was cut off: start from a clean engine.
            engine = None;
        }
    }
}

/// When the interrupt handler stops the running script.
#[derive(Default)]
struct Interrupt {
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

/// How a fetch's promise settles: with a response (headers as name, value, name, value…),
/// or rejected with the reason.
enum Settlement {
    Answered {
        status: u16,
        headers: Vec<String>,
        body: String,
    },
    Failed(String),
}

/// What the native `log` and `fetch` of every context of the engine see: the invocation in
/// progress, if any.
struct Call {
    message_id: String,
    deadline: Instant,
    logs: Vec<String>,
    logs_dropped: usize,
    fetches: Vec<FetchRecord>,
    in_flight: usize,
    done: Sender<(usize, Result<FetchResponse, DeliveryError>)>,
}

type Slot = Rc<RefCell<Option<Call>>>;

struct CachedContext {
    key: [u8; 32],
    context: Context,
    handlers: Vec<String>,
}

/// CPU time used so far by an invocation.
struct Cpu {
    used: Duration,
    limit: Duration,
}

struct Engine {
    /// Dropped before the runtime they live in.
    contexts: Vec<CachedContext>,
    interrupt: Rc<Interrupt>,
    slot: Slot,
    limits: FunctionLimits,
    client: WebhookClient,
    handle: Handle,
    /// A limit was hit or an invocation cut off: drop this engine after the job.
    spoiled: bool,
    runtime: Runtime,
}

impl Engine {
    fn new(
        limits: &FunctionLimits,
        client: WebhookClient,
        handle: Handle,
    ) -> Result<Self, rquickjs::Error> {
        let runtime = Runtime::new()?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        // Cycle collection scans every object of the runtime: not after every few invocations.
        runtime.set_gc_threshold(8 * 1024 * 1024);
        let interrupt = Rc::new(Interrupt::default());
        let seen = Rc::clone(&interrupt);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let stop = seen.deadline.get().is_some_and(|d| Instant::now() >= d);
            if stop {
                seen.fired.set(true);
            }
            stop
        })));
        Ok(Self {
            contexts: Vec::new(),
            interrupt,
            slot: Rc::new(RefCell::new(None)),
            limits: limits.clone(),
            client,
            handle,
            spoiled: false,
            runtime,
        })
    }

    fn check(&mut self, code: &FunctionCode) -> Result<Vec<String>, FunctionError> {
        let mut cpu = Cpu {
            used: Duration::ZERO,
            limit: self.limits.cpu_time,
        };
        let deadline = Instant::now() + self.limits.cpu_time * 2;
        let (_, handlers) = self.context(code, &mut cpu, deadline)?;
        Ok(handlers)
    }

    fn invoke(&mut self, invocation: &Invocation) -> InvocationReport {
        let started = Instant::now();
        let deadline = started + invocation.timeout;
        let (done, results) = mpsc::channel();
        *self.slot.borrow_mut() = Some(Call {
            message_id: invocation.message_id.clone(),
            deadline,
            logs: Vec::new(),
            logs_dropped: 0,
            fetches: Vec::new(),
            in_flight: 0,
            done,
        });
        let result = self.call(invocation, deadline, &results);
        let call = self.slot.borrow_mut().take();
        let (mut logs, fetches) = call.map_or_else(Default::default, |c| {
            let mut logs = c.logs;
            if c.logs_dropped > 0 {
                logs.push(format!("({} more log lines not kept)", c.logs_dropped));
            }
            (logs, c.fetches)
        });
        logs.shrink_to_fit();
        InvocationReport {
            result,
            logs,
            fetches,
            duration: started.elapsed(),
        }
    }

    fn call(
        &mut self,
        invocation: &Invocation,
        deadline: Instant,
        results: &Receiver<(usize, Result<FetchResponse, DeliveryError>)>,
    ) -> Result<Option<serde_json::Value>, FunctionError> {
        let mut cpu = Cpu {
            used: Duration::ZERO,
            limit: self.limits.cpu_time,
        };
        let (context, _) = self.context(&invocation.code, &mut cpu, deadline)?;
        let handler = handler_for(&invocation.payload);
        let event = serde_json::to_string(&invocation.payload).map_err(|e| invalid_payload(&e))?;
        let settings =
            serde_json::to_string(&invocation.settings).map_err(|e| invalid_payload(&e))?;
        self.run_js(&mut cpu, deadline, || {
            within(&context, |ctx| {
                let invoke: Function = ctx.globals().get("__journeys_invoke")?;
                invoke.call::<_, ()>((handler, event, settings))
            })
        })?;
        loop {
            self.run_jobs(&mut cpu, deadline)?;
            let state = self.run_js(&mut cpu, deadline, || within(&context, read_state))?;
            if let Some(outcome) = state {
                return outcome.map_err(|(name, message)| self.classify(&name, message));
            }
            let in_flight = self.slot.borrow().as_ref().map_or(0, |c| c.in_flight);
            if in_flight == 0 {
                return Err(FunctionError::new(
                    "Error",
                    "the handler's promise never settled (it waits for nothing this runtime \
                     provides: there are no timers)",
                    ErrorClass::Final,
                ));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let (index, fetched) = match results.recv_timeout(wait) {
                Ok(done) => done,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(self.timed_out(invocation.timeout));
                }
            };
            if let Err(DeliveryError::Timeout(_)) = &fetched {
                // A fetch is given the invocation's remaining time: its timeout is the
                // invocation's.
                self.record_fetch(index, fetched);
                return Err(self.timed_out(invocation.timeout));
            }
            let settled = self.record_fetch(index, fetched);
            let id = u32::try_from(index).unwrap_or(u32::MAX);
            self.run_js(&mut cpu, deadline, || {
                within(&context, |ctx| match settled {
                    Settlement::Answered {
                        status,
                        headers,
                        body,
                    } => {
                        let resolve: Function = ctx.globals().get("__journeys_resolve")?;
                        resolve.call::<_, ()>((id, status, headers, body))
                    }
                    Settlement::Failed(error) => {
                        let reject: Function = ctx.globals().get("__journeys_reject")?;
                        reject.call::<_, ()>((id, error))
                    }
                })
            })?;
        }
    }

    /// Notes a fetch's outcome and returns how its promise settles.
    fn record_fetch(
        &self,
        index: usize,
        fetched: Result<FetchResponse, DeliveryError>,
    ) -> Settlement {
        let mut slot = self.slot.borrow_mut();
        let Some(call) = slot.as_mut() else {
            return Settlement::Failed("the invocation ended".to_owned());
        };
        call.in_flight = call.in_flight.saturating_sub(1);
        let record = call.fetches.get_mut(index);
        match fetched {
            Ok(response) => {
                if let Some(record) = record {
                    record.status = Some(response.status);
                }
                Settlement::Answered {
                    status: response.status,
                    headers: response
                        .headers
                        .into_iter()
                        .flat_map(|(name, value)| [name, value])
                        .collect(),
                    body: String::from_utf8_lossy(&response.body).into_owned(),
                }
            }
            Err(err) => {
                let text = match err {
                    DeliveryError::ResponseTooLarge(limit) => format!(
                        "the response body is larger than the limit of {limit} bytes; \
                         the response was not read"
                    ),
                    other => other.to_string(),
                };
                if let Some(record) = record {
                    record.error = Some(text.clone());
                }
                Settlement::Failed(text)
            }
        }
    }

    /// Runs pending promise jobs until there are none.
    fn run_jobs(&mut self, cpu: &mut Cpu, deadline: Instant) -> Result<(), FunctionError> {
        loop {
            let runtime = self.runtime.clone();
            let ran = self.run_js(cpu, deadline, || match runtime.execute_pending_job() {
                Ok(ran) => Ok(ran),
                Err(job) => Err(job.0.with(|ctx| describe_exception(&ctx))),
            });
            match ran {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs `f` (which enters JavaScript) with the interrupt set to the earlier of the
    /// invocation's deadline and the end of its CPU budget.
    fn run_js<T>(
        &mut self,
        cpu: &mut Cpu,
        deadline: Instant,
        f: impl FnOnce() -> Result<T, Thrown>,
    ) -> Result<T, FunctionError> {
        let start = Instant::now();
        let budget = cpu.limit.saturating_sub(cpu.used);
        self.interrupt
            .deadline
            .set(Some(deadline.min(start + budget)));
        self.interrupt.fired.set(false);
        let result = f();
        cpu.used += start.elapsed();
        self.interrupt.deadline.set(None);
        if self.interrupt.fired.get() {
            self.spoiled = true;
            return Err(if cpu.used >= cpu.limit {
                FunctionError::new(
                    "CpuLimitError",
                    format!(
                        "the function used more than its CPU time limit of {} ms and was stopped",
                        cpu.limit.as_millis()
                    ),
                    ErrorClass::Final,
                )
            } else {
                self.timed_out(deadline.saturating_duration_since(start) + start.elapsed())
            });
        }
        result.map_err(|thrown| match thrown {
            Thrown::Js(name, message) => self.classify(&name, message),
            Thrown::Engine(err) => self.engine_error(&err),
        })
    }

    fn timed_out(&mut self, timeout: Duration) -> FunctionError {
        // Fetches and jobs of the cut-off invocation must not reach the next one.
        self.spoiled = true;
        FunctionError::new(
            "TimeoutError",
            format!(
                "the function did not finish within its timeout of {} ms",
                timeout.as_millis()
            ),
            ErrorClass::Retry,
        )
    }

    /// A thrown error as the dispatcher treats it.
    fn classify(&mut self, name: &str, message: String) -> FunctionError {
        if name == "InternalError" && message.contains(OUT_OF_MEMORY) {
            return self.out_of_memory();
        }
        let class = if name == "RetryError" {
            ErrorClass::Retry
        } else {
            ErrorClass::Final
        };
        FunctionError::new(name, message, class)
    }

    fn out_of_memory(&mut self) -> FunctionError {
        self.spoiled = true;
        FunctionError::new(
            "MemoryLimitError",
            format!(
                "the function ran out of memory: its engine is limited to {} MiB",
                self.limits.memory_bytes / (1024 * 1024)
            ),
            ErrorClass::Final,
        )
    }

    fn engine_error(&mut self, err: &rquickjs::Error) -> FunctionError {
        if matches!(err, rquickjs::Error::Allocation) {
            return self.out_of_memory();
        }
        self.spoiled = true;
        FunctionError::new("InternalError", err.to_string(), ErrorClass::Final)
    }

    /// The context of `code`, from the cache or evaluated now, with the handlers it defines.
    fn context(
        &mut self,
        code: &FunctionCode,
        cpu: &mut Cpu,
        deadline: Instant,
    ) -> Result<(Context, Vec<String>), FunctionError> {
        if let Some(pos) = self.contexts.iter().position(|c| c.key == code.key) {
            let cached = self.contexts.remove(pos);
            let found = (cached.context.clone(), cached.handlers.clone());
            self.contexts.push(cached);
            return Ok(found);
        }
        let context = Context::full(&self.runtime).map_err(|e| self.engine_error(&e))?;
        let slot = Rc::clone(&self.slot);
        let (client, handle) = (self.client.clone(), self.handle.clone());
        let limits = self.limits.clone();
        self.run_js(cpu, deadline, || {
            within(&context, |ctx| {
                install_natives(ctx, slot, client, handle, &limits)?;
                ctx.eval::<(), _>(PRELUDE)
            })
        })?;
        let source = code.source().to_owned();
        self.run_js(cpu, deadline, || {
            within(&context, |ctx| {
                let mut options = EvalOptions::default();
                options.strict = false;
                options.filename = Some("function.js".to_owned());
                ctx.eval_with_options::<(), _>(source, options)
            })
        })?;
        let handlers = self.run_js(cpu, deadline, || {
            within(&context, |ctx| {
                ctx.eval::<Vec<String>, _>(register_script())
            })
        })?;
        if handlers.is_empty() {
            return Err(FunctionError::new(
                "SyntaxError",
                format!(
                    "the code defines no handler; define at least one of {}",
                    HANDLERS
                        .iter()
                        .map(|(_, h)| *h)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ErrorClass::Final,
            ));
        }
        if self.contexts.len() >= self.limits.cached_functions.max(1) {
            self.contexts.remove(0);
        }
        self.contexts.push(CachedContext {
            key: code.key,
            context: context.clone(),
            handlers: handlers.clone(),
        });
        Ok((context, handlers))
    }
}

/// An error out of JavaScript: a thrown value (`name`, `message`) or the engine's own.
enum Thrown {
    Js(String, String),
    Engine(rquickjs::Error),
}

/// Runs `f` in `context`, turning a thrown exception into [`Thrown::Js`].
fn within<T>(
    context: &Context,
    f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<T>,
) -> Result<T, Thrown> {
    context.with(|ctx| f(&ctx).map_err(|e| caught(&ctx, e)))
}

/// Runs after the user's code in the same global scope, so that handlers declared with
/// `const` or `let` (not properties of `globalThis`) are found too.
fn register_script() -> String {
    let entries: Vec<String> = HANDLERS
        .iter()
        .map(|(_, h)| format!("{h}: typeof {h} === 'undefined' ? undefined : {h}"))
        .collect();
    format!("__journeys_register({{{}}})", entries.join(", "))
}

/// `Some(Ok(result JSON))` or `Some(Err((name, message)))` once the handler settled.
type Settled = Result<Option<serde_json::Value>, (String, String)>;

fn read_state(ctx: &Ctx<'_>) -> rquickjs::Result<Option<Settled>> {
    let state: Function = ctx.globals().get("__journeys_state")?;
    let state: Array = state.call(())?;
    if !state.get::<bool>(0)? {
        return Ok(None);
    }
    if let Some(name) = state.get::<Option<String>>(2)? {
        let message = state.get::<Option<String>>(3)?.unwrap_or_default();
        return Ok(Some(Err((name, message))));
    }
    let result = state
        .get::<Option<String>>(1)?
        .and_then(|json| serde_json::from_str(&json).ok());
    Ok(Some(Ok(result)))
}

/// The pending exception of `ctx` as `(name, message)`.
fn describe_exception(ctx: &Ctx<'_>) -> Thrown {
    let value = ctx.catch();
    describe_value(&value)
}

fn caught(ctx: &Ctx<'_>, err: rquickjs::Error) -> Thrown {
    if err.is_exception() {
        describe_exception(ctx)
    } else {
        Thrown::Engine(err)
    }
}

fn describe_value(value: &Value<'_>) -> Thrown {
    if let Some(object) = value.as_object() {
        let name = object
            .get::<_, Option<String>>("name")
            .ok()
            .flatten()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Error".to_owned());
        let mut message = object
            .get::<_, Option<String>>("message")
            .ok()
            .flatten()
            .unwrap_or_default();
        if name == "SyntaxError"
            && let Some(at) = object
                .get::<_, Option<String>>("stack")
                .ok()
                .flatten()
                .and_then(|s| {
                    s.lines()
                        .map(str::trim)
                        .find(|l| l.starts_with("at "))
                        .map(str::to_owned)
                })
        {
            message = format!("{message} ({at})");
        }
        return Thrown::Js(name, message);
    }
    let text = value
        .as_string()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| format!("{value:?}"));
    Thrown::Js("Error".to_owned(), text)
}

fn invalid_payload(err: &serde_json::Error) -> FunctionError {
    FunctionError::new(
        "InvalidEventPayload",
        format!("the payload does not serialize: {err}"),
        ErrorClass::Final,
    )
}

/// `__journeys_native.log` and `.fetch`, reading the invocation in progress from `slot`.
fn install_natives(
    ctx: &Ctx<'_>,
    slot: Slot,
    client: WebhookClient,
    handle: Handle,
    limits: &FunctionLimits,
) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    let log_slot = Rc::clone(&slot);
    let (max_lines, max_chars) = (limits.max_log_lines, limits.max_log_line_chars);
    native.set(
        "log",
        Function::new(ctx.clone(), move |level: String, text: String| {
            if let Some(call) = log_slot.borrow_mut().as_mut() {
                if call.logs.len() < max_lines {
                    let mut line: String = text.chars().take(max_chars).collect();
                    if line.len() < text.len() {
                        line.push('…');
                    }
                    call.logs.push(format!("{level}: {line}"));
                } else {
                    call.logs_dropped += 1;
                }
            }
        })?,
    )?;
    native.set("fetch", fetch_native(ctx, slot, client, handle, limits)?)?;
    ctx.globals().set("__journeys_native", native)?;
    Ok(())
}

/// `__journeys_native.fetch(url, method, headers, body)` (headers: name, value, name, value…): starts the request on the Tokio
/// runtime and returns its id; the worker settles the promise when the answer comes back.
fn fetch_native<'js>(
    ctx: &Ctx<'js>,
    slot: Slot,
    client: WebhookClient,
    handle: Handle,
    limits: &FunctionLimits,
) -> rquickjs::Result<Function<'js>> {
    let (max_fetches, body_limit) = (limits.max_fetches, limits.fetch_body_bytes);
    Function::new(
        ctx.clone(),
        move |ctx: Ctx<'_>,
              url: String,
              method: String,
              headers: Vec<String>,
              body: String|
              -> rquickjs::Result<u32> {
            let mut slot = slot.borrow_mut();
            let Some(call) = slot.as_mut() else {
                return Err(rquickjs::Exception::throw_type(
                    &ctx,
                    "fetch is only available while a handler runs",
                ));
            };
            if call.fetches.len() >= max_fetches {
                return Err(rquickjs::Exception::throw_type(
                    &ctx,
                    &format!("at most {max_fetches} fetches per invocation"),
                ));
            }
            let mut headers: Vec<(String, String)> = headers
                .chunks_exact(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
            {
                headers.push(("idempotency-key".to_owned(), call.message_id.clone()));
            }
            let index = call.fetches.len();
            let id = u32::try_from(index).unwrap_or(u32::MAX);
            call.fetches.push(FetchRecord {
                method: method.clone(),
                url: url.clone(),
                status: None,
                error: None,
            });
            call.in_flight += 1;
            let request = FetchRequest {
                method,
                url,
                headers,
                body: Bytes::from(body),
                timeout: call
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
                body_limit,
            };
            let done = call.done.clone();
            let client = client.clone();
            handle.spawn(async move {
                let fetched = client.fetch(request).await;
                // The invocation may have ended (timed out) meanwhile: nobody to tell.
                let _ = done.send((index, fetched));
            });
            Ok(id)
        },
    )
}
