//! [`Utf8Bytes`]: a `Bytes` known to hold valid UTF-8.

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

    /// Wraps bytes this crate has already validated as UTF-8 (for example as part of a larger
    /// region validated in one pass). Crate-private so the invariant cannot be broken from outside.
    #[inline]
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// `self[start..end]`, sharing the allocation. The bounds must be char boundaries (the
    /// decoder only cuts next to ASCII bytes); anything else yields an empty string rather
    /// than invalid UTF-8.
    #[inline]
    pub(crate) fn slice_ascii_bounded(&self, start: usize, end: usize) -> Self {
        if self.as_str().is_char_boundary(start)
            && self.as_str().is_char_boundary(end)
            && start <= end
        {
            Self(self.0.slice(start..end))
        } else {
            debug_assert!(false, "slice {start}..{end} is not on char boundaries");
            Self::new()
        }
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
        // `From<String>` and `from_static` start from `str`, and the crate-private
        // `from_validated` is only called on bytes this crate validated), there is no other way
        // to build the value, and `Bytes` is immutable.
        // Re-validating here would re-scan every payload on every access; see
        // the `utf8_view` group of `benches/benches/sse.rs` for the measured cost.
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
