//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against `journeys dev` on `127.0.0.1:0`, as an operator uses it: logging in with the admin
//! token, reading the abandoned-checkout journey as its graph with counts that refresh by
//! themselves, replaying a dead letter, following a profile to an instance's timeline, and
//! editing, publishing, archiving and duplicating a draft. Screenshots of each page go to
//! `target/console-screenshots/`.
//!
//! The tests need `chromium` and `chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Where neither can be found they print why and
//! skip; any other failure fails them.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements
)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use journeys_proto::v1 as pb;
use journeys_testkit::db::TestDb;
use journeys_testkit::sink::Sink;
use journeys_testkit::wait::eventually;
use journeys_tests::{Stack, StackOptions};
use serde_json::{Value, json};

/// How long a page, a count or a delivery may take to show on a busy machine.
const SETTLE: Duration = Duration::from_secs(30);

const TOKEN: &str = "console-s3cret";

/// A trait that would run script if the console did not escape payloads.
const HOSTILE_TRAIT: &str = "<script>window.pwned=1</script>Grace";

/// The program `env` names (when it exists), else the first of `candidates` that exists as an
/// absolute path or on `PATH`.
fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return path.exists().then_some(path);
    }
    for candidate in candidates {
        let path = Path::new(candidate);
        if path.is_absolute() && path.exists() {
            return Some(path.to_owned());
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let full = dir.join(candidate);
                if full.exists() {
                    return Some(full);
                }
            }
        }
    }
    None
}

/// Says on the terminal, past the test harness's capture, why a browser test did not run.
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {why}; the console's browser test did not run"
    );
}

/// A chromedriver process (killed on drop) and a headless Chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Drop for Browser {
    /// Ends chromedriver and the browser it started (its process group): a failed test leaves
    /// no browser behind.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session; `None`
    /// (after saying why) when either program cannot be found.
    async fn start() -> Option<Browser> {
        let Some(chromium) = find_program(
            "CHROME_BIN",
            &[
                "/usr/bin/chromium",
                "chromium",
                "chromium-browser",
                "google-chrome",
            ],
        ) else {
            skipped("no Chromium found (install the Debian package `chromium`, or set CHROME_BIN)");
            return None;
        };
        let Some(chromedriver) =
            find_program("CHROMEDRIVER", &["/usr/bin/chromedriver", "chromedriver"])
        else {
            skipped(
                "no chromedriver found (install the Debian package `chromium-driver`, or set \
                 CHROMEDRIVER)",
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // Its own process group, which the browser joins: ended together on drop.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1600", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver to start a session", SETTLE, || {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        let shots = journeys_tests::repo_root().join("target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        Some(Browser {
            client,
            driver,
            _profile: profile,
            shots,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The text of the first element matching `css`, once there is one.
    async fn text(&self, css: &str) -> String {
        eventually(&format!("an element {css}"), SETTLE, || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.ok(),
                Err(_) => None,
            }
        })
        .await
    }

    /// Waits until the text of `css` is `expected`.
    async fn text_is(&self, css: &str, expected: &str) {
        eventually(&format!("{css} to read {expected:?}"), SETTLE, || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            let text = element.text().await.ok()?;
            (text == expected).then_some(())
        })
        .await;
    }

    /// Waits until the page's main content contains `expected`; returns that content.
    async fn main_contains(&self, expected: &str) -> String {
        eventually(&format!("the page to say {expected:?}"), SETTLE, || async {
            let element = self.client.find(Locator::Css("main")).await.ok()?;
            let text = element.text().await.ok()?;
            text.contains(expected).then_some(text)
        })
        .await
    }

    async fn click(&self, locator: Locator<'_>) {
        self.client
            .wait()
            .at_most(SETTLE)
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("no {locator:?} to click: {e}"))
            .click()
            .await
            .expect("click");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .wait()
            .at_most(SETTLE)
            .for_element(Locator::Css(css))
            .await
            .expect("a field");
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Saves a screenshot of the window as `target/console-screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Waits until the browser shows the page at `path`.
    /// Saves a screenshot of the element `css` as `target/console-screenshots/<name>.png`.
    async fn screenshot_of(&self, css: &str, name: &str) -> PathBuf {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .expect("the element");
        let png = element.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    async fn path_is(&self, path: &str) {
        eventually(&format!("the page {path}"), SETTLE, || async {
            let url = self.client.current_url().await.ok()?;
            (url.path() == path).then_some(())
        })
        .await;
    }

    /// Waits until the text of `css` contains `expected`.
    async fn text_contains(&self, css: &str, expected: &str) {
        eventually(
            &format!("{css} to contain {expected:?}"),
            SETTLE,
            || async {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                let text = element.text().await.ok()?;
                text.contains(expected).then_some(())
            },
        )
        .await;
    }

    async fn close(self) {
        self.client
            .clone()
            .close()
            .await
            .expect("close the browser");
    }
}

/// Sends a track event through the Segment-compatible HTTP API.
async fn track(stack: &Stack, key: &str, user: &str, event: &str, properties: Value) {
    let reply = stack
        .http()
        .post_json(
            "/v1/track",
            Some(key),
            &json!({"userId": user, "event": event, "properties": properties}),
        )
        .await
        .expect("track");
    assert!(reply.status.is_success(), "{reply:?}");
}

/// The abandoned-checkout example delivering to `webhook`, waiting `hold` for the purchase.
fn checkout_journey(hold: &str) -> Value {
    let text = std::fs::read_to_string(
        journeys_tests::repo_root().join("examples/abandoned-checkout.json"),
    )
    .expect("the example");
    let mut json: Value = serde_json::from_str(&text).expect("JSON");
    json["journey"]["steps"][0]["hold_until"]["max_duration"] = json!(hold);
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_reads_the_graph_replays_a_dead_letter_and_finds_a_timeline() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestDb::sqlite().await.expect("a database");
    let stack = Stack::start(
        db.url(),
        StackOptions {
            admin_token: Some(TOKEN.to_owned()),
            allow_short_durations: true,
            ..StackOptions::default()
        },
    )
    .await
    .expect("journeys dev starts");
    let mut c = stack.clients().await.expect("clients");
    let key = c.create_source("web").await.expect("a source");
    let sink = Sink::start().await;
    // The destination refuses at first: a 4xx is final, so the nudge is dead-lettered.
    sink.answer_by_default(400);
    c.webhook("webhook", &sink.url(), None)
        .await
        .expect("a destination");
    c.register_events(&["checkout_started", "purchase_completed"])
        .await
        .expect("catalog");
    let journey = c.publish(&checkout_journey("2s")).await.expect("published");

    // u1 (who has a profile) buys in time; u2 does not, and is nudged (refused: a dead letter).
    let reply = stack
        .http()
        .post_json(
            "/v1/identify",
            Some(&key),
            &json!({"userId": "u1", "traits": {"email": "ada@example.com"}}),
        )
        .await
        .expect("identify");
    assert!(reply.status.is_success(), "{reply:?}");
    track(
        &stack,
        &key,
        "u1",
        "checkout_started",
        json!({"session_id": "s1"}),
    )
    .await;
    track(
        &stack,
        &key,
        "u1",
        "purchase_completed",
        json!({"session_id": "s1"}),
    )
    .await;
    // u2's first name would run as script if a payload were not escaped.
    let reply = stack
        .http()
        .post_json(
            "/v1/identify",
            Some(&key),
            &json!({"userId": "u2", "traits": {"email": "u2@example.com", "first_name": HOSTILE_TRAIT}}),
        )
        .await
        .expect("identify");
    assert!(reply.status.is_success(), "{reply:?}");
    track(
        &stack,
        &key,
        "u2",
        "checkout_started",
        json!({"session_id": "s2"}),
    )
    .await;
    let letters = eventually("the nudge to be dead-lettered", SETTLE, || {
        let mut c = c.clone();
        async move {
            let letters = c.dead_letters("webhook").await.ok()?;
            (!letters.is_empty()).then_some(letters)
        }
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let base = stack.http_base();

    // Every page asks for the token first; a wrong one is refused.
    browser.goto(&format!("{base}/console/")).await;
    browser.path_is("/console/login").await;
    browser.type_into("#token", "not-the-token").await;
    browser.click(Locator::Css("form.login button")).await;
    browser
        .text_is("#login-error", "That is not the admin token.")
        .await;
    browser.screenshot("login-refused").await;
    browser.type_into("#token", TOKEN).await;
    browser.click(Locator::Css("form.login button")).await;

    // The list: the journey with its state, entries and active instances.
    let list = browser.main_contains("Abandoned checkout nudge").await;
    assert!(list.contains("PUBLISHED"), "{list}");
    let row = browser.text("#journeys tbody tr").await;
    assert_eq!(
        row.split_whitespace().skip(5).take(2).collect::<Vec<_>>(),
        ["2", "0"],
        "entries today, active instances: {row}"
    );
    browser.screenshot("journeys").await;

    // The graph: steps with kind and name, branches labelled with their shares, counts.
    browser
        .click(Locator::LinkText("Abandoned checkout nudge"))
        .await;
    // Compared in lower case: the style sheet shows kinds in capitals.
    let graph = browser.text("svg.graph").await.to_lowercase();
    for expected in [
        "checkout_started",
        "HOLD UNTIL · WAIT_FOR_PURCHASE",
        "Wait for purchase",
        "SEND · NUDGE",
        "Send checkout nudge",
        "Purchased in time",
        "Nudged",
        "Purchased (purchase_completed)",
        "timeout 2s",
    ] {
        let expected = expected.to_lowercase();
        assert!(
            graph.contains(&expected),
            "{expected:?} in the graph:\n{graph}"
        );
    }
    browser.text_is("#n1-entered", "2").await;
    browser.text_is("#e1-share", "50% · 1").await;
    browser.text_is("#e2-share", "50% · 1").await;
    browser.text_is("#n2-entered", "1").await;
    browser.text_is("#t-n3-completed", "1").await;
    browser.screenshot("journey-graph-first").await;

    // The dead letter, with its payload, replayed to a destination that now accepts.
    browser.click(Locator::LinkText("Destinations")).await;
    // Sent, failed attempts and dead-lettered in 24 hours, dead letters waiting.
    for (column, expected) in [(3, "0"), (4, "1"), (5, "1"), (6, "1")] {
        let css = format!("#destinations tbody tr td:nth-child({column})");
        browser.text_is(&css, expected).await;
    }
    browser.click(Locator::LinkText("Webhook webhook")).await;
    // Delivery health, all time and by the hour.
    browser.text_is("#health tbody td:nth-child(3)", "1").await;
    browser
        .text_is("#hourly tbody tr:first-child td:nth-child(4)", "1")
        .await;
    let page = browser.main_contains("Dead letters").await;
    assert!(page.contains("400"), "the last error: {page}");
    let rows = browser
        .client
        .find_all(Locator::Css("#dead-letters tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    // The payload, shown as text.
    browser.click(Locator::Css("#dead-letters summary")).await;
    let payload = browser.text("#dead-letters pre").await;
    assert!(payload.contains(HOSTILE_TRAIT), "{payload}");
    let untouched = browser
        .client
        .execute("return window.pwned === undefined;", vec![])
        .await
        .expect("script");
    assert_eq!(untouched, json!(true), "markup from a payload ran");
    browser.screenshot("dead-letters").await;

    // Its instance: the timer that ended the wait, and the send with the payload it carried.
    browser
        .click(Locator::Css("#dead-letters td:nth-child(3) a"))
        .await;
    let timeline = browser.text("#timeline").await;
    for expected in ["timed_out", "timer", "send"] {
        assert!(timeline.contains(expected), "{expected:?} in:\n{timeline}");
    }
    browser.click(Locator::Css("#timeline summary")).await;
    let sent = browser.text("#timeline pre").await;
    assert!(sent.contains(HOSTILE_TRAIT), "{sent}");
    browser.screenshot("instance-dead-letter").await;
    browser.client.back().await.expect("back");
    sink.answer_by_default(200);
    browser
        .click(Locator::Css("#dead-letters button[name=one]"))
        .await;
    browser
        .text_is(
            "#replayed",
            "Replayed 1 dead letter(s): they are queued for delivery again.",
        )
        .await;
    let delivered = eventually("the replayed nudge to arrive", SETTLE, || async {
        sink.requests()
            .into_iter()
            .find(|r| r.answered == 200 && r.idempotency_key() == letters[0].message_id)
    })
    .await;
    assert_eq!(delivered.method, "POST");
    // The replayed delivery counts as sent.
    let destination_page = format!("{base}/console/destinations/webhook");
    eventually("the replayed send in the health table", SETTLE, || async {
        browser.goto(&destination_page).await;
        let sent = browser
            .client
            .find(Locator::Css("#health tbody td:nth-child(1)"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (sent == "1").then_some(())
    })
    .await;
    browser.screenshot("destination-health").await;

    // The counts refresh by themselves: a third checkout, then its timeout, show without
    // reloading the page.
    browser.click(Locator::LinkText("Journeys")).await;
    browser
        .click(Locator::LinkText("Abandoned checkout nudge"))
        .await;
    browser.text_is("#n1-entered", "2").await;
    track(
        &stack,
        &key,
        "u3",
        "checkout_started",
        json!({"session_id": "s3"}),
    )
    .await;
    browser.text_is("#n1-entered", "3").await;
    browser.text_is("#n0-entered", "3").await;
    browser.text_is("#e2-share", "67% · 2").await;
    browser.text_is("#n2-entered", "2").await;
    browser.text_is("#t-n2-completed", "2").await;
    browser.screenshot("journey-page").await;
    let shot = browser.screenshot_of("svg.graph", "journey-graph").await;
    if std::env::var_os("JOURNEYS_UPDATE_DOCS_SCREENSHOT").is_some() {
        std::fs::copy(
            &shot,
            journeys_tests::repo_root().join("docs/console-journey.png"),
        )
        .expect("copy the screenshot to docs/");
    }

    // A profile's instances, and one instance's timeline with its causes.
    browser
        .click(Locator::LinkText("Profiles and instances"))
        .await;
    browser.type_into("#user_id", "u1").await;
    browser
        .click(Locator::Css("form[role=search] button"))
        .await;
    let profile = browser.main_contains("Instances").await;
    assert!(profile.contains("Profile u1"), "{profile}");
    assert!(
        profile.contains(r#"{"email":"ada@example.com"}"#),
        "{profile}"
    );
    assert!(profile.contains("COMPLETED"), "{profile}");
    let instances = c
        .instances_of(&journey.id, "u1")
        .await
        .expect("u1's instances");
    assert_eq!(instances.len(), 1);
    browser.click(Locator::LinkText(&instances[0].id)).await;
    let timeline = browser.text("#timeline").await;
    for expected in [
        "entered",
        "branch",
        "completed",
        "event",
        "{\"branch\":\"Purchased\"}",
    ] {
        assert!(timeline.contains(expected), "{expected:?} in:\n{timeline}");
    }
    browser.screenshot("instance-timeline").await;

    // Logging out forgets the token.
    browser.click(Locator::Css("form.logout button")).await;
    browser.path_is("/console/login").await;
    browser.goto(&format!("{base}/console/destinations")).await;
    browser.path_is("/console/login").await;

    browser.close().await;
    sink.stop().await;
    stack.stop().await.expect("stops");
    db.close().await.expect("db closes");
}

/// A journey whose name and events would run script if the console did not escape them.
const HOSTILE_NAME: &str = "<img src=x onerror=\"window.pwned=1\">Checkout";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_edited_validated_and_published_and_nothing_is_run_from_their_content() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestDb::sqlite().await.expect("a database");
    let stack = Stack::start(
        db.url(),
        StackOptions {
            allow_short_durations: true,
            ..StackOptions::default()
        },
    )
    .await
    .expect("journeys dev starts");
    let mut c = stack.clients().await.expect("clients");
    let sink = Sink::start().await;
    c.register_events(&["checkout_started", "purchase_completed"])
        .await
        .expect("catalog");
    // A draft whose send step names a destination that does not exist yet.
    let mut json = checkout_journey("2s");
    json["journey"]["name"] = json!(HOSTILE_NAME);
    json["journey"]["id"] = json!("hostile");
    let draft = c
        .journeys
        .create_journey(journeys_tests::journey_request_from_json(&json).expect("request"))
        .await
        .expect("created")
        .into_inner();
    let base = stack.http_base();

    // Without a token, a loopback browser goes straight in; the name shows as text.
    browser
        .goto(&format!("{base}/console/journeys/hostile"))
        .await;
    let heading = browser.text("h1").await;
    assert!(heading.starts_with(HOSTILE_NAME), "{heading}");
    let pwned = browser
        .client
        .execute("return window.pwned === undefined;", vec![])
        .await
        .expect("script");
    assert_eq!(pwned, json!(true), "markup from the name ran");
    assert!(
        browser
            .client
            .find_all(Locator::Css("main img"))
            .await
            .expect("query")
            .is_empty(),
        "the name became an element"
    );

    // The draft's problem is drawn on the node it belongs to.
    let problem = browser.text("#problems-heading + ul").await;
    assert!(
        problem.contains("steps[1].send.destination_id"),
        "{problem}"
    );
    let flagged = browser
        .client
        .find(Locator::Css("svg.graph g.has-problems"))
        .await
        .expect("a flagged node");
    assert_eq!(
        flagged.attr("data-key").await.expect("attr").as_deref(),
        Some("nudge")
    );
    browser.screenshot("draft-problems").await;

    // The editor validates as you type, then saves.
    browser.click(Locator::LinkText("Edit definition")).await;
    browser
        .text_contains("#validation li", "steps[1].send.destination_id")
        .await;
    c.webhook("webhook", &sink.url(), None)
        .await
        .expect("a destination");
    let editor = browser
        .client
        .find(Locator::Css("#definition"))
        .await
        .expect("the editor");
    editor.send_keys(" ").await.expect("type");
    browser.text_is("#validation", "Valid.").await;
    let text = editor.prop("value").await.expect("value").expect("text");
    let edited = text.replace("\"Nudged\"", "\"Nudged <b>twice</b>\"");
    assert_ne!(edited, text);
    browser
        .client
        .execute(
            "document.getElementById('definition').value = arguments[0];",
            vec![json!(edited)],
        )
        .await
        .expect("set the text");
    editor.send_keys("\n").await.expect("type");
    browser.text_is("#validation", "Valid.").await;
    editor.send_keys("{").await.expect("type");
    browser
        .text_contains("#validation li", "not valid JSON")
        .await;
    browser.screenshot("editor-invalid").await;
    browser
        .client
        .execute(
            "document.getElementById('definition').value = arguments[0];",
            vec![json!(edited)],
        )
        .await
        .expect("set the text");
    browser
        .click(Locator::Css("form.editor button[type=submit]"))
        .await;
    let page = browser.main_contains("Nudged <b>twice</b>").await;
    assert!(!page.contains("Validation problems"), "{page}");
    let saved = c
        .journeys
        .get_journey(pb::GetJourneyRequest {
            id: draft.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(saved.revision, draft.revision + 1);
    assert_eq!(saved.steps[3].name, "Nudged <b>twice</b>");

    // Publish, send a test event, duplicate, archive.
    browser
        .click(Locator::XPath("//button[text()='Publish']"))
        .await;
    browser.main_contains("PUBLISHED").await;
    browser.click(Locator::LinkText("Send a test event")).await;
    browser
        .click(Locator::Css("form.editor button[type=submit]"))
        .await;
    browser.text_is("#answer-status", "200").await;
    assert_eq!(sink.count(), 1);
    browser.screenshot("test-send").await;
    browser
        .goto(&format!("{base}/console/journeys/hostile"))
        .await;
    browser
        .type_into("#duplicate-name", "Checkout, again")
        .await;
    browser
        .click(Locator::XPath("//button[text()='Duplicate']"))
        .await;
    let copy = browser.main_contains("Checkout, again").await;
    assert!(copy.contains("DRAFT"), "{copy}");
    browser
        .goto(&format!("{base}/console/journeys/hostile"))
        .await;
    browser
        .client
        .find(Locator::Css("#archive-mode"))
        .await
        .expect("mode")
        .select_by_value("EXIT")
        .await
        .expect("select");
    browser
        .click(Locator::XPath("//button[text()='Archive']"))
        .await;
    browser.main_contains("ARCHIVED").await;
    let archived = c
        .journeys
        .get_journey(pb::GetJourneyRequest { id: draft.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(archived.state, pb::JourneyState::Archived as i32);

    browser.close().await;
    sink.stop().await;
    stack.stop().await.expect("stops");
    db.close().await.expect("db closes");
}

/// One raw HTTP/1.1 request to `addr`; the response's status code and head.
async fn raw(addr: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_strangers_forged_forms_and_borrowed_host_names() {
    let db = TestDb::sqlite().await.expect("a database");
    let open = Stack::start(db.url(), StackOptions::default())
        .await
        .expect("journeys dev starts");
    let addr = open.http_base().trim_start_matches("http://").to_owned();
    let get = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    // Without a token: loopback callers under a loopback name only.
    let (status, head) = raw(&addr, &get(&addr, "/console/")).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("HttpOnly; SameSite=Strict"), "{head}");
    assert!(
        head.contains("x-frame-options: DENY"),
        "never framed: {head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{head}"
    );
    let (status, _) = raw(
        &addr,
        &get(
            &format!("localhost:{}", &addr[addr.rfind(':').unwrap() + 1..]),
            "/console/",
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = raw(&addr, &get("journeys.attacker.example", "/console/")).await;
    assert_eq!(status, 403, "a rebound name is refused: {body}");
    // Forms need the session's CSRF token, and cross-site posts are refused.
    let post = |extra: &str, body: &str| {
        format!(
            "POST /console/journeys/x/publish HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, body) = raw(&addr, &post("", "csrf=guess")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("The form expired"), "{body}");
    let (status, body) = raw(
        &addr,
        &post("Origin: https://attacker.example\r\n", "csrf=guess"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Cross-site requests are refused"), "{body}");
    open.stop().await.expect("stops");

    // With a token: nothing without logging in.
    let db2 = TestDb::sqlite().await.expect("a database");
    let guarded = Stack::start(
        db2.url(),
        StackOptions {
            admin_token: Some(TOKEN.to_owned()),
            ..StackOptions::default()
        },
    )
    .await
    .expect("journeys dev starts");
    let addr = guarded.http_base().trim_start_matches("http://").to_owned();
    let (status, head) = raw(&addr, &get(&addr, "/console/destinations")).await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /console/login"), "{head}");
    let (status, _) = raw(&addr, &get(&addr, "/console/journeys/x/stats.json")).await;
    assert_eq!(status, 401);
    let cookie = format!(
        "Cookie: journeys_console_token={}\r\n",
        "wrong"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let request =
        format!("GET /console/ HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n");
    let (status, _) = raw(&addr, &request).await;
    assert_eq!(status, 303, "a wrong token in the cookie is no token");
    guarded.stop().await.expect("stops");
    db.close().await.expect("db closes");
    db2.close().await.expect("db closes");
}

/// This machine's address on its default route, when it has one besides loopback.
fn outside_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the local address of the route.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_console_answers_loopback_clients_only() {
    use journeys::{Listeners, Node, Roles};
    use journeys_runtime::config::{Config, Service};
    use journeys_runtime::shutdown::Shutdown;

    // `journeys serve` with every role: the Segment API may listen on every interface
    // without an admin token, the admin API (gRPC) on loopback.
    let db = TestDb::sqlite().await.expect("a database");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let grpc_addr = grpc.local_addr().expect("addr");
    let port = http.local_addr().expect("addr").port();
    let mut config = Config::defaults_for(Service::Node);
    config.database_url = db.url().to_owned();
    let shutdown = Shutdown::new();
    let node = tokio::spawn(
        Node::new(config, Roles::ALL).serve(Listeners::new(grpc, Some(http)), shutdown.wait()),
    );
    journeys_tests::stack::wait_serving(grpc_addr, || node.is_finished())
        .await
        .expect("the node serves");

    let local = format!("127.0.0.1:{port}");
    let get =
        |host: &str| format!("GET /console/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, head) = raw(&local, &get(&local)).await;
    assert_eq!(status, 200, "{head}");
    match outside_address() {
        Some(ip) => {
            let outside = std::net::SocketAddr::new(ip, port).to_string();
            let (status, body) = raw(&outside, &get(&outside)).await;
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("answers loopback clients only"), "{body}");
            // The Segment API on the same port still answers everyone.
            let (status, _) = raw(
                &outside,
                &format!("GET /v1/track HTTP/1.1\r\nHost: {outside}\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert_ne!(status, 403);
        }
        None => eprintln!(
            "this machine has no address besides loopback: the refusal of outside clients \
             was not exercised"
        ),
    }
    shutdown.trigger();
    node.await.expect("join").expect("the node stops cleanly");
    db.close().await.expect("db closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_page_shows_one_page_of_instances_and_links_the_next() {
    let db = TestDb::sqlite().await.expect("a database");
    let stack = Stack::start(db.url(), StackOptions::default())
        .await
        .expect("journeys dev starts");
    let mut c = stack.clients().await.expect("clients");
    let key = c.create_source("web").await.expect("a source");
    let sink = Sink::start().await;
    c.webhook("webhook", &sink.url(), None)
        .await
        .expect("a destination");
    c.register_events(&["checkout_started", "purchase_completed"])
        .await
        .expect("catalog");
    // An hour's wait: every instance stays active.
    let journey = c
        .publish(&checkout_journey("3600s"))
        .await
        .expect("published");
    let batch: Vec<Value> = (0..30)
        .map(|n| {
            json!({"type": "track", "userId": format!("u{n}"), "event": "checkout_started",
                   "properties": {"session_id": format!("s{n}")}})
        })
        .collect();
    let reply = stack
        .http()
        .post_json("/v1/batch", Some(&key), &json!({ "batch": batch }))
        .await
        .expect("batch");
    assert!(reply.status.is_success(), "{reply:?}");
    eventually("30 instances", SETTLE, || {
        let mut c = c.clone();
        let id = journey.id.clone();
        async move { (c.instances_of(&id, "").await.ok()?.len() == 30).then_some(()) }
    })
    .await;

    let addr = stack.http_base().trim_start_matches("http://").to_owned();
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, first) = raw(&addr, &get("/console/journeys/abandoned-checkout")).await;
    assert_eq!(status, 200, "{first}");
    let rows = |page: &str| page.matches("<a href=\"/console/instances/").count();
    assert_eq!(rows(&first), 25, "one page of instances");
    assert!(
        first.contains("entered <tspan id=\"n1-entered\">30</tspan>"),
        "{first}"
    );
    let next = first
        .split("rel=\"next\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|link| link.split('"').next())
        .expect("a link to the next page")
        .replace("&amp;", "&");
    let (status, second) = raw(&addr, &get(&next)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(rows(&second), 5, "the rest");
    assert!(!second.contains("rel=\"next\""), "no page after the last");
    sink.stop().await;
    stack.stop().await.expect("stops");
    db.close().await.expect("db closes");
}
