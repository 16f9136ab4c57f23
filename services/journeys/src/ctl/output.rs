//! How commands print: aligned columns for people (`-o table`, the default), or the API's own
//! messages as JSON (the proto3 JSON mapping, exactly as grpcurl prints them) or YAML.
//!
//! Messages are printed through the descriptor set the servers use for reflection, so the CLI
//! and grpcurl never disagree on a field's name or an enum's spelling.

use std::io::Write as _;
use std::sync::LazyLock;

use journeys_proto::v1 as pb;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde::Serialize;

use super::error::{Error, Result};

/// The output formats of `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's message, as JSON.
    Json,
    /// The API's message, as YAML.
    Yaml,
}

/// A message of the `journeys.v1` API and its full protobuf name.
pub trait Named: Message + Default {
    const NAME: &'static str;
}

macro_rules! named {
    ($($ty:ident),* $(,)?) => {
        $(impl Named for pb::$ty {
            const NAME: &'static str = concat!("journeys.v1.", stringify!($ty));
        })*
    };
}

named!(
    Journey,
    ListJourneysResponse,
    ValidateJourneyResponse,
    GetJourneyStatsResponse,
    SimulateJourneyResponse,
    Destination,
    ListDestinationsResponse,
    GetDestinationStatsResponse,
    TestFunctionResponse,
    ListDeadLettersResponse,
    ReplayDeadLettersResponse,
    Source,
    CreateSourceResponse,
    ListSourcesResponse,
    Audience,
    ListAudiencesResponse,
    AddMembersResponse,
    RemoveMembersResponse,
    ListMembersResponse,
    CheckMembershipResponse,
    DeleteProfileResponse,
    CatalogEvent,
    ListEventsResponse,
    Profile,
    Instance,
    ListInstancesResponse,
    Event,
);

/// The `journeys.v1` descriptors (and the well-known types they import).
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(journeys_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

pub fn pool() -> Result<&'static DescriptorPool> {
    POOL.as_ref()
        .map_err(|e| Error::Failed(format!("the built-in API descriptors are unreadable: {e}")))
}

pub fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| Error::Failed(format!("the built-in API has no message {name}")))
}

/// `message` as a dynamic message of its descriptor.
pub fn dynamic<M: Named>(message: &M) -> Result<DynamicMessage> {
    DynamicMessage::decode(descriptor(M::NAME)?, message.encode_to_vec().as_slice())
        .map_err(|e| Error::Failed(format!("cannot re-read a {}: {e}", M::NAME)))
}

/// A dynamic message serialized with chosen options.
struct WithOptions<'a>(&'a DynamicMessage, SerializeOptions);

impl Serialize for WithOptions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(serializer, &self.1)
    }
}

/// `message` as JSON (`Format::Json`) or YAML (`Format::Yaml`); `None` for tables, which each
/// command draws itself.
pub fn encoded<M: Named>(format: Format, message: &M) -> Result<Option<String>> {
    let dynamic = dynamic(message)?;
    let text = match format {
        Format::Table => return Ok(None),
        // 64-bit integers as strings, as the proto3 JSON mapping (and grpcurl) writes them.
        Format::Json => {
            let mut text =
                serde_json::to_string_pretty(&WithOptions(&dynamic, SerializeOptions::new()))
                    .map_err(|e| Error::Failed(format!("cannot print JSON: {e}")))?;
            text.push('\n');
            text
        }
        // YAML is read by people: numbers as numbers.
        Format::Yaml => serde_yaml_ng::to_string(&WithOptions(
            &dynamic,
            SerializeOptions::new().stringify_64_bit_integers(false),
        ))
        .map_err(|e| Error::Failed(format!("cannot print YAML: {e}")))?,
    };
    Ok(Some(text))
}

/// `message` as a JSON value (proto3 JSON mapping), to combine several in one document.
pub fn json_value<M: Named>(message: &M) -> Result<serde_json::Value> {
    serde_json::to_value(WithOptions(&dynamic(message)?, SerializeOptions::new()))
        .map_err(|e| Error::Failed(format!("cannot print JSON: {e}")))
}

/// Prints a JSON value as JSON or YAML (tables are drawn by each command).
pub fn print_value(format: Format, value: &serde_json::Value) -> Result<()> {
    let text = match format {
        Format::Yaml => serde_yaml_ng::to_string(value)
            .map_err(|e| Error::Failed(format!("cannot print YAML: {e}")))?,
        Format::Json | Format::Table => {
            let mut text = serde_json::to_string_pretty(value)
                .map_err(|e| Error::Failed(format!("cannot print JSON: {e}")))?;
            text.push('\n');
            text
        }
    };
    out(&text);
    Ok(())
}

/// Prints `message` as JSON or YAML and returns `true`, or returns `false` for tables.
pub fn print_message<M: Named>(format: Format, message: &M) -> Result<bool> {
    match encoded(format, message)? {
        Some(text) => {
            out(&text);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Writes `text` to stdout. A closed pipe (`journeys … | head`) is not an error.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Rows under a header, in columns as wide as their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table with three spaces between columns and no trailing blanks.
    #[must_use]
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A timestamp as RFC 3339 in UTC to the second, `-` when unset.
pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A duration as people write it: `90s`, `5m`, `1h`, `1h30m`, `2d`.
pub fn duration(d: Option<&prost_types::Duration>) -> String {
    let Some(d) = d else {
        return "-".to_owned();
    };
    let secs = d.seconds;
    if d.nanos != 0 {
        return format!("{secs}.{:03}s", d.nanos / 1_000_000);
    }
    if secs == 0 {
        return "0s".to_owned();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut rest = secs;
    let mut text = String::new();
    for (unit, size) in units {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

/// An empty string as `-`, so that columns stay aligned and readable.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// `text` on one line of at most `max` characters (`…` marks a cut; `-o json` shows it all).
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        or_dash(&flat)
    }
}

/// A free-form JSON value (a `Struct`) on one line.
pub fn compact(s: Option<&prost_types::Struct>) -> String {
    match s {
        Some(s) if !s.fields.is_empty() => {
            journeys_proto::convert::json::response_struct_to_json(Some(s)).to_string()
        }
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_columns_without_trailing_blanks() {
        let mut table = Table::new(&["ID", "NAME", "STATE"]);
        table.row(vec!["a".into(), "Long name".into(), "DRAFT".into()]);
        table.row(vec!["longer-id".into(), "n".into(), String::new()]);
        assert_eq!(
            table.render(),
            "ID          NAME        STATE\na           Long name   DRAFT\nlonger-id   n\n"
        );
    }

    #[test]
    fn long_cells_are_cut_to_one_line() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("", 4), "-");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(duration(Some(&d(3600))), "1h");
        assert_eq!(duration(Some(&d(5400))), "1h30m");
        assert_eq!(duration(Some(&d(45))), "45s");
        assert_eq!(duration(None), "-");
    }

    #[test]
    fn messages_print_as_grpcurl_prints_them() {
        let journey = pb::Journey {
            id: "j".into(),
            state: pb::JourneyState::Draft as i32,
            revision: 3,
            ..Default::default()
        };
        let json = encoded(Format::Json, &journey).unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": "j", "state": "DRAFT", "revision": "3"})
        );
        let yaml = encoded(Format::Yaml, &journey).unwrap().unwrap();
        assert!(yaml.contains("revision: 3\n"), "{yaml}");
        assert!(encoded(Format::Table, &journey).unwrap().is_none());
    }
}
