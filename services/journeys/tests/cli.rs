//! The `journeys` command line against a running `journeys dev`, as an operator uses it: the
//! real binary, run as a child process against the product on `127.0.0.1:0` (every service
//! of `journeys dev`, on each store backend), with its table and JSON output and its exit codes
//! checked (0 done, 1 refused or failed, 2 bad usage or invalid input).

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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use journeys_runtime::config::ENV_VARS;
use journeys_testkit::each_backend;
use journeys_testkit::sink::Sink;
use journeys_testkit::wait::eventually;
use journeys_tests::{Stack, StackOptions};
use serde_json::Value;

/// Variables of the CLI itself, besides the servers' (`ENV_VARS`).
const CLI_VARS: [&str; 2] = ["JOURNEYS_ADDR", "JOURNEYS_WRITE_KEY"];

/// How long an asynchronous outcome (a delivery, a dead letter) may take to show.
const SETTLE: Duration = Duration::from_secs(30);

/// What one run of the command printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the run succeeded; its stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts the run succeeded; its stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the run exited with `code`; its stderr.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        assert!(
            self.stderr.starts_with("error: "),
            "failures are reported on stderr: {self:#?}"
        );
        &self.stderr
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The `journeys` binary, from the repository root, with no Journeys variable but `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_journeys"));
    command.args(args).current_dir(repo_root());
    for var in ENV_VARS.iter().chain(CLI_VARS.iter()) {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs `journeys <args>` against `addr` (through `JOURNEYS_ADDR`, as an operator sets it).
async fn cli(addr: SocketAddr, args: &[&str]) -> Run {
    cli_env(addr, args, &[]).await
}

async fn cli_env(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Run {
    let addr = addr.to_string();
    let mut all_env = vec![("JOURNEYS_ADDR", addr.as_str())];
    all_env.extend_from_slice(env);
    let mut command = command(args, &all_env);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("journeys runs");
    Run {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// The first line of `table` whose first cell is `key`, split into cells.
fn row(table: &str, key: &str) -> Vec<String> {
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().is_some_and(|c| c == key))
        .unwrap_or_else(|| panic!("no row {key:?} in:\n{table}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.display().to_string()
}

const BROKEN: &str = r#"{"journey":{"name":"Broken","entry":{"event":"x"},"start_step":"a","steps":[{"key":"A","name":"a"}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_verbs_define_publish_observe_and_retire_a_journey() {
    each_backend(async |db| {
        let stack = Stack::start(db.url(), StackOptions::default())
            .await
            .expect("journeys dev starts");
        let addr = stack.grpc_addr();
        let sink = Sink::start().await;
        let dir = tempfile::tempdir().expect("temp dir");

        // What the journey refers to: its events and its destination.
        let out = cli(
            addr,
            &["catalog", "register", "checkout_started", "purchase_completed"],
        )
        .await;
        assert_eq!(
            out.ok(),
            "event/checkout_started registered\nevent/purchase_completed registered\n"
        );
        let url = sink.url();
        let out = cli(
            addr,
            &["destination", "create", "--id", "webhook", "--name", "Sink", "--url", &url],
        )
        .await;
        assert_eq!(out.ok(), "destination/webhook created\n");

        // apply creates the draft, then changes nothing; the revision says so.
        let example = "examples/abandoned-checkout.json";
        let out = cli(addr, &["journey", "apply", "-f", example]).await;
        assert_eq!(out.ok(), "journey/abandoned-checkout created\n");
        let before = cli(addr, &["journey", "get", "abandoned-checkout", "-o", "json"])
            .await
            .json();
        let out = cli(addr, &["journey", "apply", "-f", example]).await;
        assert_eq!(out.ok(), "journey/abandoned-checkout unchanged\n");
        let after = cli(addr, &["journey", "get", "abandoned-checkout", "-o", "json"])
            .await
            .json();
        assert_eq!(before["revision"], after["revision"]);
        assert_eq!(before["updatedAt"], after["updatedAt"]);

        // get -o yaml, edit, apply: the draft is updated; the same YAML again changes nothing.
        let yaml = cli(addr, &["journey", "get", "abandoned-checkout", "-o", "yaml"]).await;
        let edited = yaml.ok().replace(
            "description: Starts on checkout_started",
            "description: Edited. Starts on checkout_started",
        );
        assert_ne!(edited, yaml.stdout, "the YAML holds the description");
        let edited = write(dir.path(), "edited.yaml", &edited);
        let out = cli(addr, &["journey", "apply", "-f", &edited]).await;
        let revision = after["revision"].as_str().unwrap().parse::<i64>().unwrap() + 1;
        assert_eq!(
            out.ok(),
            format!("journey/abandoned-checkout configured (revision {revision})\n")
        );
        let out = cli(addr, &["journey", "apply", "-f", &edited]).await;
        assert_eq!(out.ok(), "journey/abandoned-checkout unchanged\n");

        // validate: a stored journey, and a broken file with every problem and its path.
        let out = cli(addr, &["journey", "validate", "abandoned-checkout"]).await;
        assert_eq!(out.ok(), "journey 'abandoned-checkout' is valid\n");
        let broken = write(dir.path(), "broken.json", BROKEN);
        let out = cli(addr, &["journey", "validate", "-f", &broken]).await;
        let stderr = out.failed(2);
        assert!(stderr.contains("problems\n"), "{stderr}");
        assert!(stderr.contains("\n  start_step: "), "{stderr}");
        assert!(stderr.contains("\n  steps[0].key: "), "{stderr}");
        let out = cli(addr, &["journey", "validate", "-f", &broken, "-o", "json"]).await;
        assert_eq!(out.code, 2);
        let response: Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
        assert!(response["problems"].as_array().unwrap().len() >= 3, "{response}");
        // A broken definition is refused by apply with the same problems, and nothing stored.
        let out = cli(addr, &["journey", "apply", "-f", &broken]).await;
        assert!(out.failed(2).contains("\n  start_step: "), "{out:#?}");
        // A file that does not even read as a journey names the bad value.
        let typo = write(dir.path(), "typo.json", r#"{"name":"T","stpes":[]}"#);
        let out = cli(addr, &["journey", "apply", "-f", &typo]).await;
        assert!(out.failed(2).contains("stpes"), "{out:#?}");
        let list = cli(addr, &["journey", "list", "-o", "json"]).await.json();
        assert_eq!(list["journeys"].as_array().unwrap().len(), 1, "{list}");

        // list as a table and as JSON.
        let table = cli(addr, &["journey", "list"]).await;
        assert_eq!(
            row(table.ok(), "ID"),
            ["ID", "NAME", "STATE", "REVISION", "ENTRY", "UPDATED"]
        );
        let journey = row(&table.stdout, "abandoned-checkout");
        assert!(journey.contains(&"DRAFT".to_owned()), "{journey:?}");

        // publish; the published journey refuses a changed file, and says what to do.
        let out = cli(addr, &["journey", "publish", "abandoned-checkout"]).await;
        assert_eq!(out.ok(), "journey/abandoned-checkout published\n");
        let out = cli(addr, &["journey", "apply", "-f", example]).await;
        assert!(
            out.failed(1).contains("journeys journey duplicate abandoned-checkout"),
            "{out:#?}"
        );
        let drafts = cli(addr, &["journey", "list", "--state", "draft", "-o", "json"])
            .await
            .json();
        assert_eq!(drafts, serde_json::json!({}), "no drafts now");
        let get = cli(addr, &["journey", "get", "abandoned-checkout"]).await;
        assert_eq!(row(get.ok(), "State:"), ["State:", "PUBLISHED"]);
        assert!(
            get.stdout.contains("timeout 1h → nudge"),
            "the steps and where they go: {}",
            get.stdout
        );

        // Events: u1 abandons, u2 buys.
        let key = cli(addr, &["source", "create", "web", "--key-only"]).await;
        let key = key.ok().trim().to_owned();
        let events = write(
            dir.path(),
            "events.jsonl",
            concat!(
                r#"{"type":"identify","userId":"u1","traits":{"email":"ada@example.com"}}"#, "\n",
                r#"{"type":"track","userId":"u1","event":"checkout_started","messageId":"c1","properties":{"session_id":"s1"}}"#, "\n",
                "\n",
                r#"{"type":"track","userId":"u2","event":"checkout_started","messageId":"c2","properties":{"session_id":"s2"}}"#, "\n",
                r#"{"type":"track","userId":"u2","event":"purchase_completed","messageId":"p2","properties":{"session_id":"s2"}}"#, "\n",
            ),
        );
        let sent = cli_env(
            addr,
            &["events", "send", "-f", &events, "-o", "json"],
            &[("JOURNEYS_WRITE_KEY", &key)],
        )
        .await
        .json();
        assert_eq!(sent["events"], 4, "{sent}");
        assert_eq!(sent["acknowledged"], 4, "{sent}");

        // stats: a table per step, send and branch; the same numbers in JSON.
        let stats = cli(addr, &["journey", "stats", "abandoned-checkout"]).await;
        let text = stats.ok();
        assert_eq!(
            row(text, "wait_for_purchase")[..5],
            ["wait_for_purchase", "2", "1", "1", "0"],
            "entered 2, waiting 1, completed 1, exited 0:\n{text}"
        );
        assert_eq!(row(text, "SEND"), ["SEND", "SENT", "FAILED", "DEAD-LETTERED"]);
        assert_eq!(row(text, "nudge")[..2], ["nudge", "0"]);
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["wait_for_purchase", "Purchased", "1", "100%"]),
            "the branch taken with its share:\n{text}"
        );
        let stats = cli(addr, &["journey", "stats", "abandoned-checkout", "-o", "json"])
            .await
            .json();
        let hold = stats["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stepKey"] == "wait_for_purchase")
            .unwrap();
        assert_eq!((&hold["entered"], &hold["waiting"]), (&"2".into(), &"1".into()));
        // By the hour, from an hour ago: this hour's two entries; a bad time is a usage error.
        let an_hour_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
        let hourly = cli(
            addr,
            &["journey", "stats", "abandoned-checkout", "--from", &an_hour_ago, "--hourly"],
        )
        .await;
        let text = hourly.ok();
        assert_eq!(row(text, "ENTRIES"), ["ENTRIES", "2"], "{text}");
        assert_eq!(row(text, "HOUR")[..2], ["HOUR", "ENTRIES"], "{text}");
        let bad = cli(addr, &["journey", "stats", "abandoned-checkout", "--to", "yesterday"]).await;
        assert!(bad.failed(2).contains("--to"), "{bad:#?}");

        // simulate: a file and a stored journey, over JSON lines with virtual times.
        let sim = write(
            dir.path(),
            "sim.jsonl",
            concat!(
                r#"{"event":{"type":"track","userId":"s","event":"checkout_started","properties":{"session_id":"x"}},"at":"2025-01-01T00:00:00Z"}"#, "\n",
            ),
        );
        let out = cli(addr, &["journey", "simulate", "-f", example, "--events", &sim]).await;
        let text = out.ok();
        let instance = text.lines().nth(1).expect("one instance row");
        let cells: Vec<&str> = instance.split_whitespace().collect();
        assert_eq!(cells[1..], ["s", "x", "COMPLETED", "done", "1"], "{text}");
        assert!(text.contains("2025-01-01T01:00:00Z"), "the nudge an hour later:\n{text}");
        let out = cli(
            addr,
            &["journey", "simulate", "--id", "abandoned-checkout", "--events", &sim, "-o", "json"],
        )
        .await
        .json();
        assert_eq!(out["instances"][0]["sends"].as_array().unwrap().len(), 1, "{out}");
        assert!(sink.requests().is_empty(), "a simulation sends nothing");

        // duplicate into a draft, delete the draft.
        let copy = cli(
            addr,
            &["journey", "duplicate", "abandoned-checkout", "--name", "Copy", "-o", "json"],
        )
        .await
        .json();
        assert_eq!(copy["state"], "DRAFT");
        assert_eq!(copy["name"], "Copy");
        let copy_id = copy["id"].as_str().unwrap();
        let out = cli(addr, &["journey", "duplicate", "abandoned-checkout"]).await;
        assert!(
            out.ok().ends_with("created (a draft copy of abandoned-checkout)\n"),
            "{out:#?}"
        );
        let out = cli(addr, &["journey", "delete", copy_id]).await;
        assert_eq!(out.ok(), format!("journey/{copy_id} deleted\n"));

        // archive in exit mode: u1's waiting instance ends.
        let archived = cli(
            addr,
            &["journey", "archive", "abandoned-checkout", "--mode", "exit", "-o", "json"],
        )
        .await
        .json();
        assert_eq!(archived["state"], "ARCHIVED");
        let active = cli(
            addr,
            &["instance", "list", "--journey", "abandoned-checkout", "--state", "active", "-o", "json"],
        )
        .await
        .json();
        assert_eq!(active, serde_json::json!({}), "no active instance left");
        let exited = cli(
            addr,
            &["instance", "list", "--journey", "abandoned-checkout", "--state", "exited"],
        )
        .await;
        assert_eq!(row(exited.ok(), "ID")[..3], ["ID", "JOURNEY", "USER"]);
        assert_eq!(exited.stdout.lines().count(), 2, "{}", exited.stdout);

        // What fails, fails with the right code.
        let out = cli(addr, &["journey", "get", "nope"]).await;
        assert!(out.failed(1).contains("not found"), "{out:#?}");
        let out = cli(addr, &["journey", "archive", "x", "--mode", "later"]).await;
        assert_eq!(out.code, 2, "a usage error: {out:#?}");
        let out = cli(addr, &["journey", "publish", "abandoned-checkout"]).await;
        assert_eq!(out.code, 1, "{out:#?}");

        sink.stop().await;
        stack.stop().await.expect("journeys dev stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_instances_profiles_and_dead_letters() {
    each_backend(async |db| {
        let stack = Stack::start(db.url(), StackOptions::default())
            .await
            .expect("journeys dev starts");
        let addr = stack.grpc_addr();
        let sink = Sink::start().await;
        // The destination refuses: a 4xx is final, so the send is dead-lettered at once.
        sink.answer_by_default(400);
        let dir = tempfile::tempdir().expect("temp dir");

        // Sources: the write key once, then only its prefix.
        let created = cli(addr, &["source", "create", "web", "-o", "json"]).await.json();
        let key = created["writeKey"].as_str().unwrap().to_owned();
        let source_id = created["id"].as_str().unwrap().to_owned();
        let sources = cli(addr, &["source", "list"]).await;
        let web = row(sources.ok(), &source_id);
        assert_eq!(web[1], "web");
        assert!(key.starts_with(&web[2]), "the prefix of {key}: {web:?}");
        assert!(!sources.stdout.contains(&key), "the key is never shown again");

        // Destinations, from flags and from a YAML file.
        let url = sink.url();
        cli(
            addr,
            &[
                "destination", "create", "--id", "webhook", "--name", "Sink", "--url", &url,
                "--header", "X-Team=growth", "--signing-secret", "s3cret", "--timeout", "5",
            ],
        )
        .await
        .ok();
        let file = write(
            dir.path(),
            "other.yaml",
            &format!("destination:\n  id: other\n  name: Other\n  webhook:\n    url: {url}/other\n"),
        );
        let out = cli(addr, &["destination", "create", "-f", &file]).await;
        assert_eq!(out.ok(), "destination/other created\n");
        let list = cli(addr, &["destination", "list"]).await;
        assert_eq!(
            row(list.ok(), "other")[..4],
            ["other", "Other", "webhook", &format!("{url}/other")]
        );
        let got = cli(addr, &["destination", "get", "webhook", "-o", "json"]).await.json();
        assert_eq!(got["webhook"]["headers"]["X-Team"], "growth", "{got}");
        assert_ne!(got["webhook"]["signingSecret"], "s3cret", "masked: {got}");
        let got = cli(addr, &["destination", "get", "webhook"]).await;
        assert_eq!(row(got.ok(), "Timeout:"), ["Timeout:", "5s"]);
        let out = cli(addr, &["destination", "delete", "other"]).await;
        assert_eq!(out.ok(), "destination/other deleted\n");
        let out = cli(
            addr,
            &["destination", "create", "--name", "Bad", "--url", &url, "--header", "novalue"],
        )
        .await;
        assert!(out.failed(2).contains("NAME=VALUE"), "{out:#?}");

        // Audiences and members.
        let out = cli(addr, &["audience", "create", "vip", "--name", "VIP customers"]).await;
        assert_eq!(out.ok(), "audience/vip created\n");
        let out = cli(addr, &["audience", "add", "vip", "u1", "u2", "u1"]).await;
        assert!(out.ok().starts_with("audience/vip: 2 added"), "{out:#?}");
        let members = cli(addr, &["audience", "members", "vip", "-o", "json"]).await.json();
        assert_eq!(members["userIds"], serde_json::json!(["u1", "u2"]), "{members}");
        let out = cli(addr, &["audience", "check", "vip", "u1"]).await;
        assert_eq!(out.ok(), "u1 is a member of vip\n");
        let out = cli(addr, &["audience", "remove", "vip", "u2"]).await;
        assert_eq!(out.ok(), "audience/vip: 1 removed\n");
        let out = cli(addr, &["audience", "check", "vip", "u2"]).await;
        assert_eq!(out.ok(), "u2 is not a member of vip\n");
        let list = cli(addr, &["audience", "list"]).await;
        assert_eq!(row(list.ok(), "vip")[..5], ["vip", "VIP", "customers", "yes", "1"]);
        let got = cli(addr, &["audience", "archive", "vip", "-o", "json"]).await.json();
        assert_eq!(got["active"], Value::Null, "archived (false is left out): {got}");
        assert!(got["archivedAt"].is_string(), "{got}");

        // Catalog, a forwarding journey, and one form submitted.
        cli(addr, &["catalog", "register", "form_submitted"]).await.ok();
        cli(addr, &["journey", "apply", "-f", "examples/realtime-forwarding.json"])
            .await
            .ok();
        cli(addr, &["journey", "publish", "form-forwarding"]).await.ok();
        let out = cli(addr, &["destination", "delete", "webhook"]).await;
        assert!(out.failed(1).contains("failed precondition"), "in use: {out:#?}");
        let events = write(
            dir.path(),
            "events.jsonl",
            concat!(
                r#"{"type":"identify","userId":"u1","traits":{"email":"ada@example.com","plan":"pro"}}"#, "\n",
                r#"{"type":"track","userId":"u1","event":"form_submitted","messageId":"f1","properties":{"submission_id":"f1","form_type":"contact","email":"ada@example.com"}}"#, "\n",
            ),
        );
        let out = cli(addr, &["events", "send", "--write-key", &key, "-f", &events]).await;
        assert_eq!(
            row(out.ok(), "EVENTS"),
            ["EVENTS", "ACKNOWLEDGED", "DUPLICATES", "REJECTED", "SECONDS", "EVENTS/S"]
        );
        assert_eq!(row(&out.stdout, "2")[..4], ["2", "2", "0", "0"], "{}", out.stdout);
        let catalog = cli(addr, &["catalog", "list"]).await;
        assert_eq!(row(catalog.ok(), "form_submitted")[1], "1", "{}", catalog.stdout);

        // The refused send becomes a dead letter; listed, then replayed to a sink that accepts.
        let letters = eventually("the dead letter", SETTLE, || async {
            let list = cli(addr, &["dead-letters", "list", "-o", "json"]).await.json();
            list["deadLetters"].as_array().filter(|l| !l.is_empty()).cloned()
        })
        .await;
        assert_eq!(letters.len(), 1);
        let letter_id = letters[0]["id"].as_str().unwrap().to_owned();
        let table = cli(addr, &["dead-letters", "list", "--journey", "form-forwarding"]).await;
        let cells = row(table.ok(), &letter_id);
        assert_eq!(cells[1..4], ["webhook", "form-forwarding", "forward"], "{}", table.stdout);
        assert!(table.stdout.contains("400"), "the last error: {}", table.stdout);
        let out = cli(addr, &["dead-letters", "list", "--destination", "other", "-o", "json"]).await;
        assert_eq!(out.json(), serde_json::json!({}));
        sink.answer_by_default(200);
        let out = cli(addr, &["dead-letters", "replay", &letter_id]).await;
        assert_eq!(out.ok(), "1 dead letter queued for delivery again\n");
        let delivered = sink.wait_for(2, SETTLE).await;
        assert_eq!(delivered[0].idempotency_key(), delivered[1].idempotency_key());
        // Delivery health: the refused attempt, then the replay's delivery; the replayed dead
        // letter is no longer counted as dead.
        let health = eventually("the delivery counted", SETTLE, || async {
            let stats = cli(addr, &["destination", "stats", "webhook", "-o", "json"]).await.json();
            (stats["sent"] == "1").then_some(stats)
        })
        .await;
        assert_eq!(health["failed"], "1", "{health}");
        assert_eq!(health["deadLettered"], Value::Null, "0 is left out: {health}");
        let table = cli(addr, &["destination", "stats", "webhook"]).await;
        assert!(table.ok().contains("DEAD-LETTERED") && table.stdout.contains("HOUR"), "{table:#?}");
        let out = cli(addr, &["destination", "stats", "webhook", "--from", "yesterday"]).await;
        assert!(out.failed(2).contains("--from"), "{out:#?}");
        let out = cli(addr, &["dead-letters", "replay"]).await;
        assert_eq!(out.code, 2, "ids or --all: {out:#?}");

        // The instance and its timeline; the profile with traits and the same timeline.
        let instances = cli(addr, &["instance", "list", "--user", "u1", "-o", "json"])
            .await
            .json();
        let instance_id = instances["instances"][0]["id"].as_str().unwrap().to_owned();
        let out = cli(addr, &["instance", "get", &instance_id]).await;
        let text = out.ok();
        assert_eq!(row(text, "State:"), ["State:", "COMPLETED"]);
        assert_eq!(row(text, "AT"), ["AT", "STEP", "KIND", "CAUSE", "DETAIL"]);
        assert!(
            text.lines().any(|l| l.contains(" forward ") && l.contains(" f1 ")),
            "a transition caused by the event f1:\n{text}"
        );
        let out = cli(addr, &["instance", "get", &instance_id, "-o", "json"]).await.json();
        assert!(!out["timeline"].as_array().unwrap().is_empty(), "{out}");
        let profile = cli(addr, &["profile", "get", "u1"]).await;
        let text = profile.ok();
        assert_eq!(row(text, "plan"), ["plan", "\"pro\""]);
        assert!(
            text.lines()
                .any(|l| l.contains(" form-forwarding ") && l.contains(&instance_id) && l.contains(" f1 ")),
            "the profile's timeline:\n{text}"
        );
        let profile = cli(addr, &["profile", "get", "u1", "-o", "json"]).await.json();
        assert_eq!(profile["profile"]["traits"]["email"], "ada@example.com");
        assert_eq!(profile["instances"][0]["id"], instance_id.as_str());
        let yaml = cli(addr, &["profile", "get", "u1", "-o", "yaml"]).await;
        let yaml: Value = serde_yaml_ng::from_str(yaml.ok()).expect("YAML");
        assert_eq!(yaml["profile"]["userId"], "u1");

        // Revoking a source; a key nobody has is refused.
        let out = cli(addr, &["source", "revoke", &source_id]).await;
        assert_eq!(out.ok(), format!("source/{source_id} revoked\n"));
        let revoked = cli(addr, &["source", "list", "-o", "json"]).await.json();
        assert!(revoked["sources"][0]["revokedAt"].is_string(), "{revoked}");
        let out = cli(addr, &["events", "send", "--write-key", "jk_nobody", "-f", &events]).await;
        assert!(out.failed(1).contains("unauthenticated"), "{out:#?}");

        sink.stop().await;
        stack.stop().await.expect("journeys dev stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_comes_from_the_flag_or_the_environment() {
    let db = journeys_testkit::db::TestDb::sqlite()
        .await
        .expect("SQLite");
    let options = StackOptions {
        admin_token: Some("t0ken".to_owned()),
        ..StackOptions::default()
    };
    let stack = Stack::start(db.url(), options)
        .await
        .expect("journeys dev starts");
    let addr = stack.grpc_addr();
    let out = cli(addr, &["journey", "list"]).await;
    assert!(out.failed(1).contains("unauthenticated"), "{out:#?}");
    let out = cli(addr, &["journey", "list", "--token", "t0ken", "-o", "json"]).await;
    assert_eq!(out.json(), serde_json::json!({}));
    let out = cli_env(
        addr,
        &["catalog", "list"],
        &[("JOURNEYS_ADMIN_TOKEN", "t0ken")],
    )
    .await;
    assert_eq!(
        row(out.ok(), "EVENT"),
        ["EVENT", "COUNT", "FIRST", "SEEN", "LAST", "SEEN"]
    );
    let out = cli(addr, &["catalog", "list", "--token", "wrong"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    // --addr wins over JOURNEYS_ADDR; nothing listens on port 1.
    let out = cli(addr, &["catalog", "list", "--addr", "127.0.0.1:1"]).await;
    assert!(
        out.failed(1)
            .contains("cannot connect to http://127.0.0.1:1"),
        "{out:#?}"
    );
    stack.stop().await.expect("journeys dev stops");
    db.close().await.expect("remove the database");
}

#[test]
fn every_noun_has_help_with_examples() {
    for noun in [
        "journey",
        "events",
        "destination",
        "source",
        "audience",
        "catalog",
        "instance",
        "profile",
        "dead-letters",
    ] {
        let output = command(&[noun, "--help"], &[])
            .output()
            .expect("journeys runs");
        assert!(output.status.success(), "{noun} --help");
        let help = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(
            help.contains("Examples:\n  journeys "),
            "{noun} --help:\n{help}"
        );
        for flag in ["--addr", "--token", "--output"] {
            assert!(help.contains(flag), "{noun} --help lacks {flag}:\n{help}");
        }
    }
    let output = command(&["journey"], &[]).output().expect("journeys runs");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a noun without a verb is a usage error"
    );
}

/// 100,000 events streamed from a file: every one answered, duplicates and rejections
/// counted, and the progress reported while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_send_streams_100000_events_with_progress_and_a_summary() {
    const EVENTS: usize = 100_000;
    const DUPLICATES: usize = 500;
    const REJECTED: usize = 100;
    let db = journeys_testkit::db::TestDb::sqlite()
        .await
        .expect("SQLite");
    let stack = Stack::start(db.url(), StackOptions::default())
        .await
        .expect("journeys dev starts");
    let addr = stack.grpc_addr();
    let key = cli(addr, &["source", "create", "load", "--key-only"]).await;
    let key = key.ok().trim().to_owned();

    // Lines 0..DUPLICATES are sent again at the end (same message ids), and REJECTED lines
    // lack a user id.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::with_capacity(EVENTS * 120);
    let unique = EVENTS - DUPLICATES - REJECTED;
    for i in 0..unique {
        writeln!(
            text,
            r#"{{"type":"track","userId":"u{}","event":"page_viewed","messageId":"m{i}","properties":{{"n":{i}}}}}"#,
            i % 5_000
        )
        .unwrap();
    }
    for i in 0..REJECTED {
        writeln!(
            text,
            r#"{{"type":"track","event":"page_viewed","messageId":"r{i}"}}"#
        )
        .unwrap();
    }
    for i in 0..DUPLICATES {
        writeln!(
            text,
            r#"{{"type":"track","userId":"u{}","event":"page_viewed","messageId":"m{i}"}}"#,
            i % 5_000
        )
        .unwrap();
    }
    let file = write(dir.path(), "load.jsonl", &text);
    drop(text);

    let out = cli(
        addr,
        &[
            "events",
            "send",
            "--write-key",
            &key,
            "-f",
            &file,
            "-o",
            "json",
            "--progress-every",
            "1",
        ],
    )
    .await;
    // Rejections make the exit code 1, after the summary.
    assert_eq!(out.code, 1, "{out:#?}");
    let summary: Value = serde_json::from_str(&out.stdout).expect("the summary as JSON");
    assert_eq!(summary["events"], EVENTS, "{summary}");
    assert_eq!(summary["acknowledged"], unique, "{summary}");
    assert_eq!(summary["duplicates"], DUPLICATES, "{summary}");
    assert_eq!(summary["rejected"], REJECTED, "{summary}");
    assert_eq!(
        summary["rejectedByCode"]["missing_user_id"], REJECTED,
        "{summary}"
    );
    assert!(
        out.stderr.contains(&format!(
            "error: {REJECTED} of {EVENTS} events were rejected"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("line 99401, message r0: missing_user_id"),
        "{}",
        out.stderr
    );
    // Not a terminal: a plain progress line every second.
    let seconds = summary["seconds"].as_f64().unwrap();
    let progress = out
        .stderr
        .lines()
        .filter(|l| l.contains(" events/s  acknowledged "))
        .count();
    assert!(
        seconds < 2.0 || progress >= 1,
        "{seconds} s and no progress line:\n{}",
        out.stderr
    );

    // The catalog counted every accepted event once.
    let catalog = cli(addr, &["catalog", "list", "-o", "json"]).await.json();
    let counted = catalog["events"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == "page_viewed"))
        .map(|e| e["count"].clone());
    assert_eq!(counted, Some(Value::from(unique.to_string())), "{catalog}");

    stack.stop().await.expect("journeys dev stops");
    db.close().await.expect("remove the database");
}

/// Segment's `onTrack`, as users paste it.
const CRM_FUNCTION: &str = r#"
async function onTrack(event, settings) {
  const res = await fetch(settings.url, {
    method: 'POST',
    headers: { Authorization: `Bearer ${settings.apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: event.userId, event: event.event })
  })
  console.log(`crm answered ${res.status}`)
  if (res.status >= 500) throw new RetryError(`upstream ${res.status}`)
  if (!res.ok) throw new ValidationError(`rejected ${res.status}`)
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_destinations_are_created_shown_and_tried_from_the_command_line() {
    let db = journeys_testkit::db::TestDb::sqlite()
        .await
        .expect("SQLite");
    let stack = Stack::start(db.url(), StackOptions::default())
        .await
        .expect("journeys dev starts");
    let addr = stack.grpc_addr();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let code = write(dir.path(), "crm.js", CRM_FUNCTION);
    let crm = format!("{}/crm", sink.url());

    let out = cli(
        addr,
        &[
            "destination",
            "create",
            "--id",
            "crm",
            "--name",
            "CRM",
            "--function",
            &code,
            "--setting",
            &format!("url={crm}"),
            "--setting",
            "retries=3",
            "--secret",
            "apiKey=k3y",
            "--timeout",
            "5",
        ],
    )
    .await;
    assert_eq!(out.ok(), "destination/crm created\n");
    let list = cli(addr, &["destination", "list"]).await;
    assert_eq!(row(list.ok(), "crm")[..4], ["crm", "CRM", "function", "-"]);
    let got = cli(addr, &["destination", "get", "crm"]).await;
    let text = got.ok();
    assert_eq!(row(text, "Kind:"), ["Kind:", "function"]);
    assert!(text.contains("handlers: onTrack"), "{text}");
    assert_eq!(row(text, "Secrets:"), ["Secrets:", "apiKey"]);
    assert!(!text.contains("k3y"), "a secret is never shown: {text}");
    let got = cli(addr, &["destination", "get", "crm", "-o", "json"])
        .await
        .json();
    assert_eq!(
        got["function"]["settings"]["retries"], 3.0,
        "JSON values: {got}"
    );
    assert_eq!(got["function"]["settings"]["url"], crm.as_str(), "{got}");

    // The stored function on the sample event: one fetch, with the secret merged in.
    let out = cli(
        addr,
        &["destination", "test-function", "--destination", "crm"],
    )
    .await;
    let text = out.ok();
    assert!(text.starts_with("returned"), "{text}");
    assert!(text.contains("crm answered 200"), "the logs: {text}");
    assert_eq!(row(text, "POST")[1..], [crm.as_str(), "200"]);
    let received = sink.wait_for(1, SETTLE).await;
    assert_eq!(received[0].header("authorization"), Some("Bearer k3y"));
    assert_eq!(received[0].str_field("user"), "test-user");

    // Other code on a given event: a thrown ValidationError is the command's failure.
    sink.answer_by_default(422);
    let event = write(
        dir.path(),
        "event.json",
        r#"{"type":"track","event":"order_placed","userId":"u9","properties":{}}"#,
    );
    let out = cli(
        addr,
        &[
            "destination",
            "test-function",
            "--code",
            &code,
            "--payload",
            &event,
            "--setting",
            &format!("url={crm}"),
            "--secret",
            "apiKey=other",
        ],
    )
    .await;
    assert!(
        out.failed(1).contains("ValidationError: rejected 422"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("dead-lettered"), "{out:#?}");
    assert_eq!(
        sink.wait_for(2, SETTLE).await[1].str_field("event"),
        "order_placed"
    );
    let out = cli(
        addr,
        &[
            "destination",
            "create",
            "--name",
            "X",
            "--function",
            &code,
            "--url",
            &crm,
        ],
    )
    .await;
    assert_eq!(out.code, 2, "a function has no URL: {out:#?}");
    let out = cli(
        addr,
        &[
            "destination",
            "test-function",
            "--code",
            &code,
            "--setting",
            "url",
        ],
    )
    .await;
    assert!(out.failed(2).contains("NAME=VALUE"), "{out:#?}");

    sink.stop().await;
    stack.stop().await.expect("journeys dev stops");
}
