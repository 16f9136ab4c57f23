//! Rendering helpers of the console: escaping (every value that came from a user, a journey
//! definition or an event goes through [`esc`]), the page frame, and small formatters.

use std::fmt::Write as _;

use journeys_proto::v1 as pb;

use super::auth::Session;

/// `text` safe inside HTML text and double-quoted attribute values (and inline SVG).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one path segment or query value of a URL (RFC 3986 unreserved kept).
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Journeys,
    Profiles,
    Destinations,
    None,
}

/// A whole page: the frame (navigation, log-out form when a token is in use) around `body`.
pub fn page(session: &Session, section: Section, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (s, href, label) in [
        (Section::Journeys, "/console/", "Journeys"),
        (
            Section::Profiles,
            "/console/profiles",
            "Profiles and instances",
        ),
        (
            Section::Destinations,
            "/console/destinations",
            "Destinations",
        ),
    ] {
        let current = if s == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    let logout = if session.token.is_some() {
        format!(
            "<form method=\"post\" action=\"/console/logout\" class=\"logout\">{}\
             <button type=\"submit\">Log out</button></form>",
            csrf_field(session)
        )
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Journeys console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to the content</a>\
         <header><a class=\"brand\" href=\"/console/\">Journeys</a>\
         <nav aria-label=\"Main\"><ul>{nav}</ul></nav>{logout}</header>\
         <main id=\"main\">{body}</main></body></html>\n",
        title = esc(title),
    )
}

/// The hidden field every form posts, checked against the session's cookie.
pub fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// A time as `2026-12-05 09:56:43 UTC`, `-` when absent.
pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A journey state's name.
pub fn journey_state(state: i32) -> &'static str {
    pb::JourneyState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

/// An instance state's name.
pub fn instance_state(state: i32) -> &'static str {
    pb::InstanceState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

/// A struct as one line of JSON (the proto3 JSON mapping), `-` when absent or empty.
pub fn compact(value: Option<&prost_types::Struct>) -> String {
    crate::ctl::output::compact(value)
}

/// `part` of `whole` as a whole percentage, `-` when nothing was counted.
pub fn share(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "-".to_owned();
    }
    let percent = (i128::from(part) * 100 + i128::from(whole) / 2) / i128::from(whole);
    format!("{percent}%")
}

/// A "next page" link keeping `base`'s query, when there is a next page.
pub fn next_page(base: &str, token: &str) -> String {
    if token.is_empty() {
        return String::new();
    }
    let joiner = if base.contains('?') { '&' } else { '?' };
    format!(
        "<p class=\"pager\"><a href=\"{}{joiner}page_token={}\" rel=\"next\">Next page</a></p>",
        esc(base),
        url_part(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(url_part("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
        assert_eq!(url_part("abc-1_2.3~"), "abc-1_2.3~");
    }

    #[test]
    fn shares_round_to_whole_percent() {
        assert_eq!(share(1, 3), "33%");
        assert_eq!(share(2, 3), "67%");
        assert_eq!(share(0, 0), "-");
    }
}
