//! [`RawJson`]: an owned, already-validated JSON value kept as text.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// One JSON value kept as its (validated) source text.
///
/// Payloads that the protocol only relays — agent state, RPC arguments and results — are held
/// as `RawJson` so that they are scanned once while the frame is classified and never parsed
/// into a tree unless the application asks for a typed value
/// ([`deserialize`](Self::deserialize)).
///
/// Equality compares the text, not the value: `{"a":1}` and `{ "a": 1 }` are different
/// `RawJson`s.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Validates `json` as exactly one JSON value and keeps it as it is (no reformatting).
    pub fn from_string(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(Self)
    }

    /// Serialises `value` (compact form).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// Wraps an existing boxed raw value.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// Copies a borrowed raw value.
    pub fn from_raw_ref(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }

    /// The JSON `null`.
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    #[inline]
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The underlying raw value.
    #[inline]
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Gives back the boxed raw value.
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }

    /// Parses the text into a typed value.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Parses the text into a [`serde_json::Value`] tree.
    ///
    /// Fails only when the value nests deeper than serde_json's recursion limit (128).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Whether the value is a JSON array.
    pub fn is_array(&self) -> bool {
        self.get().trim_start().starts_with('[')
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({})", self.get())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        Self(raw)
    }
}

impl From<&RawValue> for RawJson {
    fn from(raw: &RawValue) -> Self {
        Self::from_raw_ref(raw)
    }
}

impl From<&serde_json::Value> for RawJson {
    fn from(value: &serde_json::Value) -> Self {
        // Serialising a `Value` cannot fail: its map keys are strings and it holds no
        // non-finite floats.
        Self::from_serialize(value).unwrap_or_else(|_| Self::null())
    }
}

impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> Self {
        Self::from(&value)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}
