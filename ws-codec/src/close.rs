//! Close status codes (RFC 6455 §7.4).

use std::fmt;

/// A close status code (RFC 6455 §7.4).
///
/// Any `u16` can be held; [`is_valid_on_wire`](Self::is_valid_on_wire) tells whether a peer may
/// send it in a Close frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a Close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (e.g. invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message or frame too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: an unexpected condition inside the server.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: bad gateway.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// `true` if the code may appear in a Close frame: 1000–1003, 1007–1014 (IANA registry) and
    /// the private/registered ranges 3000–4999. 1004–1006 and 1015 are reserved and never sent.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// This code if it may be sent, else [`NORMAL`](Self::NORMAL): for codes that come from
    /// elsewhere (an application, a peer's Close) and are about to be sent.
    pub fn or_normal(self) -> CloseCode {
        if self.is_valid_on_wire() {
            self
        } else {
            CloseCode::NORMAL
        }
    }
}

/// The most bytes a Close frame's reason may have (a control payload's 125 minus the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes at a character boundary.
pub fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> u16 {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_autobahn_7_7_and_7_9() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
        }
    }

    #[test]
    fn codes_and_reasons_are_made_sendable() {
        assert_eq!(CloseCode(4004).or_normal(), CloseCode(4004));
        assert_eq!(CloseCode(1006).or_normal(), CloseCode::NORMAL);
        assert_eq!(close_reason("bye"), "bye");
        let long = "é".repeat(100); // 200 bytes, two per character
        let cut = close_reason(&long);
        assert_eq!(cut.len(), 122);
        assert!(long.starts_with(cut));
        assert_eq!(close_reason(&"x".repeat(200)).len(), MAX_CLOSE_REASON);
    }
}
