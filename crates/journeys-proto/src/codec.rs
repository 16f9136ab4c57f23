//! [`Codec`]: the prost codec of every `journeys.v1` service, except that a message that does
//! not decode is answered `INVALID_ARGUMENT` with a short message naming the problem.
//!
//! `tonic_prost::ProstCodec` answers `INTERNAL` with prost's whole decode trace: for a message
//! nested past prost's recursion limit (e.g. a `Track` whose properties nest 40 objects deep)
//! that is one `Struct.fields: Value.kind: …` step per level, about a kilobyte, and the code
//! says the server failed when the request was at fault. The ingest stream reads its messages
//! through the same codec, so both paths give the same answer.
//!
//! Generated clients use the codec too: a reply that does not decode is also reported as
//! `INVALID_ARGUMENT` with this message, which names the message and field where it failed.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// How many messages deep prost decodes (its `RECURSION_LIMIT`, without the
/// `no-recursion-limit` feature).
pub const RECURSION_LIMIT: usize = 100;

/// Longest message path (e.g. `Event.properties`) quoted in an error.
const MAX_PATH_CHARS: usize = 80;

/// [`tonic_prost::ProstCodec`] with [`ShortDecoder`]: set as the codec of the generated
/// clients and servers (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ShortDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ShortDecoder { _type: PhantomData }
    }
}

/// Decodes `U` with prost; a failure is `INVALID_ARGUMENT` with [`decode_error_message`].
#[derive(Debug, Clone)]
pub struct ShortDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ShortDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(decode_error_message(&error)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A one-line account of `error`: the reason (the end of prost's trace) and the outermost
/// field it happened under (e.g. `Event.properties`), never the whole trace.
#[must_use]
pub fn decode_error_message(error: &prost::DecodeError) -> String {
    let text = error.to_string();
    let trace = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let steps: Vec<&str> = trace.split(": ").collect();
    let reason = steps.last().copied().unwrap_or("invalid message");
    let reason = if reason == "recursion limit reached" {
        format!("it is nested too deeply (at most {RECURSION_LIMIT} levels of messages)")
    } else {
        reason.to_owned()
    };
    // prost adds a step as the error leaves each message: the outermost comes last, just
    // before the reason.
    match steps.len().checked_sub(2).map(|i| steps[i]) {
        Some(path) => {
            let path: String = path.chars().take(MAX_PATH_CHARS).collect();
            format!("the message could not be decoded: {reason}, in {path}")
        }
        _ => format!("the message could not be decoded: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use prost_types::value::Kind;

    use super::*;

    fn nested(depth: usize) -> prost_types::Struct {
        let mut value = prost_types::Value {
            kind: Some(Kind::NumberValue(1.0)),
        };
        for _ in 0..depth {
            value = prost_types::Value {
                kind: Some(Kind::StructValue(prost_types::Struct {
                    fields: [("a".to_owned(), value)].into_iter().collect(),
                })),
            };
        }
        prost_types::Struct {
            fields: [("deep".to_owned(), value)].into_iter().collect(),
        }
    }

    #[test]
    fn a_message_nested_too_deeply_is_named_in_one_short_line() {
        let event = crate::v1::Event {
            properties: Some(nested(200)),
            ..Default::default()
        };
        let bytes = event.encode_to_vec();
        let error = crate::v1::Event::decode(bytes.as_slice()).expect_err("too deep");
        assert!(error.to_string().len() > 900, "prost's trace: {error}");
        let message = decode_error_message(&error);
        assert_eq!(
            message,
            "the message could not be decoded: it is nested too deeply (at most 100 levels of \
             messages), in Event.properties"
        );
    }

    #[test]
    fn other_decode_errors_keep_their_reason() {
        let error = crate::v1::Event::decode([0xff_u8, 0xff].as_slice()).expect_err("garbage");
        let message = decode_error_message(&error);
        assert!(
            message.starts_with("the message could not be decoded: ") && message.len() < 200,
            "{message}"
        );
    }
}
