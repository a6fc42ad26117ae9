//! The event stream encoder: what a server writes.
//!
//! Every value that ends up on a field line is validated when it is built ([`EventName`],
//! [`EventId`]) or split into lines while it is written (data, comments), so no input can
//! produce a malformed frame or a panic.

use agentwire_utf8::Utf8Bytes;
use bytes::{BufMut, BytesMut};
use std::fmt;
use std::time::Duration;

/// A value given to [`EventName::new`] or [`EventId::new`] contained a character that cannot
/// appear on an SSE field line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidField {
    /// A carriage return (U+000D).
    CarriageReturn,
    /// A line feed (U+000A).
    LineFeed,
    /// A NUL (U+0000): a client ignores an `id:` holding one.
    Nul,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CarriageReturn => "field value contains a carriage return",
            Self::LineFeed => "field value contains a line feed",
            Self::Nul => "field value contains a nul",
        })
    }
}

impl std::error::Error for InvalidField {}

fn check_field(s: &str) -> Result<(), InvalidField> {
    match memchr::memchr3(b'\r', b'\n', 0, s.as_bytes()).map(|i| s.as_bytes()[i]) {
        None => Ok(()),
        Some(b'\r') => Err(InvalidField::CarriageReturn),
        Some(b'\n') => Err(InvalidField::LineFeed),
        Some(_) => Err(InvalidField::Nul),
    }
}

macro_rules! field_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(Utf8Bytes);

        impl $name {
            /// Validates the value: CR, LF and NUL are refused.
            pub fn new(value: impl Into<Utf8Bytes>) -> Result<Self, InvalidField> {
                let value = value.into();
                check_field(&value)?;
                Ok(Self(value))
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&'static str> for $name {
            type Error = InvalidField;
            fn try_from(s: &'static str) -> Result<Self, InvalidField> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;
            fn try_from(s: String) -> Result<Self, InvalidField> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

field_type!(
    /// A validated event type for the `event:` field.
    EventName
);
field_type!(
    /// A validated event ID for the `id:` field.
    EventId
);

/// An event to write: data plus optional type, ID and reconnection time.
///
/// ```
/// use agentwire_sse::{EventId, EventName, OutEvent};
/// use bytes::BytesMut;
///
/// let name = EventName::new("update")?;
/// let id = EventId::new("42")?;
/// let mut out = BytesMut::new();
/// OutEvent::new("line one\nline two").event(&name).id(&id).encode(&mut out);
/// assert_eq!(&out[..], b"id: 42\nevent: update\ndata: line one\ndata: line two\n\n");
/// # Ok::<(), agentwire_sse::InvalidField>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use = "an event does nothing until it is encoded"]
pub struct OutEvent<'a> {
    data: &'a str,
    event: Option<&'a EventName>,
    id: Option<&'a EventId>,
    retry: Option<Duration>,
}

impl<'a> OutEvent<'a> {
    /// An event with this data. The data is split on CR, LF and CRLF into `data:` lines.
    pub fn new(data: &'a str) -> Self {
        Self {
            data,
            event: None,
            id: None,
            retry: None,
        }
    }

    /// Sets the event type (`event:`).
    pub fn event(mut self, name: &'a EventName) -> Self {
        self.event = Some(name);
        self
    }

    /// Sets the event ID (`id:`).
    pub fn id(mut self, id: &'a EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the client's reconnection time (`retry:`, in whole milliseconds).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Appends the encoded event, ending with the blank line that dispatches it.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len_hint());
        self.write_head(dst);
        write_lines(dst, b"data: ", self.data);
        dst.put_u8(b'\n');
    }

    /// `id:`, `event:`, `retry:` — the order the reference Agents server writes.
    fn write_head(&self, dst: &mut BytesMut) {
        if let Some(id) = self.id {
            write_field(dst, b"id: ", id.as_str());
        }
        if let Some(name) = self.event {
            write_field(dst, b"event: ", name.as_str());
        }
        if let Some(retry) = self.retry {
            encode_retry(retry, dst);
        }
    }

    fn encoded_len_hint(&self) -> usize {
        self.data.len()
            + 8
            + self.event.map_or(0, |n| n.0.len() + 8)
            + self.id.map_or(0, |i| i.0.len() + 5)
            + if self.retry.is_some() { 28 } else { 0 }
    }

    /// Appends the event with `value` serialised as compact JSON on one `data:` line.
    ///
    /// Compact JSON never contains a raw CR or LF (they are escaped inside strings), so the
    /// frame is always well formed. If serialisation fails, `dst` is left as it was.
    #[cfg(feature = "json")]
    pub fn encode_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), serde_json::Error> {
        let mark = dst.len();
        self.write_head(dst);
        dst.extend_from_slice(b"data: ");
        let mut writer = dst.writer();
        if let Err(e) = serde_json::to_writer(&mut writer, value) {
            writer.into_inner().truncate(mark);
            return Err(e);
        }
        let dst = writer.into_inner();
        dst.extend_from_slice(b"\n\n");
        Ok(())
    }
}

fn write_field(dst: &mut BytesMut, name: &[u8], value: &str) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(value.as_bytes());
    dst.put_u8(b'\n');
}

/// Writes `text` as one `prefix` line per line of text, splitting on CR, LF and CRLF.
fn write_lines(dst: &mut BytesMut, prefix: &[u8], text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(i) = crate::scan::find_line_end(&bytes[start..], false) {
        let end = start + i;
        dst.extend_from_slice(prefix);
        dst.extend_from_slice(&bytes[start..end]);
        dst.put_u8(b'\n');
        start = if bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n') {
            end + 2
        } else {
            end + 1
        };
    }
    dst.extend_from_slice(prefix);
    dst.extend_from_slice(&bytes[start..]);
    dst.put_u8(b'\n');
}

/// Appends a comment (`: text`), one comment line per line of `text`. Clients ignore
/// comments; proxies see traffic.
pub fn encode_comment(text: &str, dst: &mut BytesMut) {
    write_lines(dst, b": ", text);
}

/// Appends the keep-alive comment `:\n`: the smallest write that keeps an idle connection
/// from being closed by proxies. It dispatches nothing.
pub fn encode_keep_alive(dst: &mut BytesMut) {
    dst.extend_from_slice(b":\n");
}

/// Appends a `retry:` line on its own (whole milliseconds, saturating at `u64::MAX`).
pub fn encode_retry(retry: Duration, dst: &mut BytesMut) {
    let ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    dst.extend_from_slice(b"retry: ");
    let mut digits = [0u8; 20];
    let mut n = ms;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
    dst.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_line_breaks_and_nul() {
        assert_eq!(EventName::new("a\nb"), Err(InvalidField::LineFeed));
        assert_eq!(EventName::new("a\rb"), Err(InvalidField::CarriageReturn));
        assert_eq!(EventId::new("1\u{0}"), Err(InvalidField::Nul));
        assert!(EventId::new("ok: with colon").is_ok());
    }

    #[test]
    fn splits_data_on_every_line_ending() {
        let mut out = BytesMut::new();
        OutEvent::new("a\r\nb\rc\nd\n").encode(&mut out);
        assert_eq!(
            &out[..],
            b"data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n" as &[u8]
        );
    }

    #[test]
    fn retry_and_comments() {
        let mut out = BytesMut::new();
        encode_comment("x\ny", &mut out);
        encode_keep_alive(&mut out);
        encode_retry(Duration::from_millis(1500), &mut out);
        encode_retry(Duration::ZERO, &mut out);
        assert_eq!(&out[..], b": x\n: y\n:\nretry: 1500\nretry: 0\n" as &[u8]);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_is_one_line_and_failure_leaves_buffer_alone() {
        let mut out = BytesMut::from(&b"keep"[..]);
        OutEvent::new("")
            .encode_json(&serde_json::json!({"t": "a\nb\r"}), &mut out)
            .unwrap();
        assert_eq!(&out[..], b"keepdata: {\"t\":\"a\\nb\\r\"}\n\n" as &[u8]);

        struct Fails;
        impl serde::Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let before = out.clone();
        assert!(OutEvent::new("").encode_json(&Fails, &mut out).is_err());
        assert_eq!(out, before);
    }
}
