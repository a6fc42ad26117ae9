//! Stand-in for the `deflate` module when the feature is off: the codec type is uninhabited,
//! so the connection's `Option<Codec>` is always `None` and its compression paths are dead.

use bytes::Bytes;

/// No value of this type exists.
#[derive(Debug)]
pub(crate) enum Codec {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // matched by the connection, never built without the feature
pub(crate) enum InflateError {
    TooLarge,
    Corrupt,
}

impl Codec {
    pub(crate) fn compresses(&self, _len: usize) -> bool {
        match *self {}
    }
    pub(crate) fn compresses_streams(&self) -> bool {
        match *self {}
    }
    pub(crate) fn compress(&mut self, _input: &[u8], _fin: bool) -> Option<Bytes> {
        match *self {}
    }
    pub(crate) fn release_deadline(&self, _base: std::time::Instant) -> Option<std::time::Instant> {
        match *self {}
    }
    pub(crate) fn handle_timeout(&mut self, _now: std::time::Instant, _base: std::time::Instant) {
        match *self {}
    }
    pub(crate) fn holds(&self) -> (bool, bool) {
        match *self {}
    }
    pub(crate) fn standalone(&self) -> Option<(u8, u32)> {
        match *self {}
    }
    pub(crate) fn inflate(
        &mut self,
        _input: &[u8],
        _fin: bool,
        _limit: usize,
        _out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        match *self {}
    }
}

pub(crate) fn compress_standalone(_input: &[u8], _bits: u8, _level: u32) -> Option<Bytes> {
    None
}
