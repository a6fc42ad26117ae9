//! [`Utf8Bytes`]: a `Bytes` known to hold valid UTF-8.
//!
//! The one text type of the agentwire codecs: a decoded SSE field (`agentwire-sse`), a
//! WebSocket text message (`agentwire-ws`) and an encoded Agents protocol frame
//! (`agentwire-protocol`) are all `Utf8Bytes`, so text moves between them without a copy or a
//! second validation. It lives in its own crate so that neither codec depends on the other.
//!
//! ```
//! use agentwire_utf8::Utf8Bytes;
//! use bytes::Bytes;
//!
//! let read = Bytes::from_static(b"data: hello\n");
//! let line = Utf8Bytes::try_from_bytes(read).unwrap();
//! let value = line.slice_ref(&line[6..11]); // shares the allocation, no copy
//! assert_eq!(value, "hello");
//! ```
//!
//! Why not an existing crate: `bytestring::ByteString` validates with `std::str::from_utf8`
//! (6–7× slower than `simdutf8` on 64 KiB in the `utf8_view` bench group), and wrapping text the
//! codecs validated in bulk (a whole read, an incremental WebSocket validator) would need an
//! `unsafe` constructor call at every such site; here the one `unsafe` block is
//! [`Utf8Bytes::as_str`].

use bytes::Bytes;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// A cheaply cloneable, immutable UTF-8 string stored in [`Bytes`].
///
/// The invariant (the bytes are valid UTF-8) is checked once, when the value is built; after
/// that, [`as_str`](Self::as_str) is free. Slicing an input buffer into `Utf8Bytes` does not
/// copy, so a decoded SSE `data` field or a WebSocket text message points into the bytes that
/// were read from the socket.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

/// The bytes given to [`Utf8Bytes::try_from`] were not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8 {
    /// The input, handed back.
    pub bytes: Bytes,
    /// Length of the longest valid UTF-8 prefix.
    pub valid_up_to: usize,
}

impl fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid utf-8 after byte {}", self.valid_up_to)
    }
}

impl std::error::Error for NotUtf8 {}

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A string from a static `str`, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Validates `bytes` as UTF-8 (SIMD-accelerated) and wraps them without copying.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, NotUtf8> {
        match simdutf8::basic::from_utf8(&bytes) {
            Ok(_) => Ok(Self(bytes)),
            Err(_) => {
                let valid_up_to = match std::str::from_utf8(&bytes) {
                    Ok(_) => bytes.len(),
                    Err(e) => e.valid_up_to(),
                };
                Err(NotUtf8 { bytes, valid_up_to })
            }
        }
    }

    /// `self[start..end]`, sharing the allocation, or `None` when the bounds are out of range
    /// or not on char boundaries.
    #[inline]
    pub fn slice(&self, start: usize, end: usize) -> Option<Self> {
        self.as_str().get(start..end).map(|s| self.slice_ref(s))
    }

    /// The part of `self` that `subset` is, sharing the allocation (no copy, no validation:
    /// `subset` is already a `str`).
    ///
    /// # Panics
    ///
    /// If `subset` is not a sub-slice of `self` (see [`Bytes::slice_ref`]).
    #[inline]
    pub fn slice_ref(&self, subset: &str) -> Self {
        if subset.is_empty() {
            return Self::new();
        }
        Self(self.0.slice_ref(subset.as_bytes()))
    }

    /// Builds from bytes with invalid sequences replaced by U+FFFD, copying only when
    /// something had to be replaced.
    pub fn from_bytes_lossy(bytes: Bytes) -> Self {
        match Self::try_from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => Self::from(String::from_utf8_lossy(&e.bytes).into_owned()),
        }
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees valid UTF-8 (`try_from_bytes` validates,
        // `From<String>` and `from_static` start from `str`, `slice` and `slice_ref` cut a
        // valid string at char boundaries: `slice_ref` takes a `&str` inside `self`, `slice`
        // goes through `str::get`), there is no other way to build the value, and `Bytes` is
        // immutable.
        // Re-validating here would re-scan every payload on every access; see
        // the `utf8_view` group of the SSE benchmarks (`benches/benches/sse.rs`) for the measured cost.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The underlying bytes.
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` if the string is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<str> for Utf8Bytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(s: Utf8Bytes) -> Self {
        s.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = NotUtf8;
    fn try_from(bytes: Bytes) -> Result<Self, NotUtf8> {
        Self::try_from_bytes(bytes)
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_keeps_allocation() {
        let b = Bytes::from(vec![b'h', b'i', 0xE2, 0x82, 0xAC]);
        let ptr = b.as_ptr();
        let s = Utf8Bytes::try_from_bytes(b).unwrap();
        assert_eq!(s.as_str(), "hi€");
        assert_eq!(s.as_bytes().as_ptr(), ptr);
    }

    #[test]
    fn rejects_invalid() {
        let e = Utf8Bytes::try_from_bytes(Bytes::from_static(b"ab\xFFc")).unwrap_err();
        assert_eq!(e.valid_up_to, 2);
        assert_eq!(Utf8Bytes::from_bytes_lossy(e.bytes).as_str(), "ab\u{FFFD}c");
    }
}
