//! The crate's error type.

/// Errors of the constructors and of the call table. Classification never fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RPC `args` must be a JSON array.
    #[error("rpc args must be a json array")]
    ArgsNotArray,
    /// A value could not be serialised to JSON.
    #[error("json serialisation failed: {0}")]
    Json(String),
    /// The call table already has a pending call with this id.
    #[error("duplicate call id {0:?}")]
    DuplicateCallId(String),
}
