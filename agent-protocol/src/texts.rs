//! The exact texts the reference implementation puts on the wire or hands to applications.
//!
//! Clients match on these strings; keep them byte for byte.

/// `cf_agent_state_error` (and RPC error) text for a readonly connection.
pub const CONNECTION_READONLY: &str = "Connection is readonly";

/// `cf_agent_state_error` text when the state validation hook refused an update.
pub const STATE_UPDATE_REJECTED: &str = "State update rejected";

/// RPC error text when a regular method throws something that is not an `Error`.
pub const UNKNOWN_ERROR: &str = "Unknown error occurred";

/// Rejection text of pending calls when the connection closes (client side).
pub const CONNECTION_CLOSED: &str = "Connection closed";

/// Body of the `400` answer for an unknown agent namespace.
pub const INVALID_REQUEST: &str = "Invalid request";

/// Body of the `404` answer when an agent has no HTTP handler.
pub const NOT_IMPLEMENTED: &str = "Not implemented";

/// `Method {method} does not exist`.
pub fn method_does_not_exist(method: &str) -> String {
    format!("Method {method} does not exist")
}

/// `Method {method} is not callable`.
pub fn method_not_callable(method: &str) -> String {
    format!("Method {method} is not callable")
}

/// `RPC call to {method} timed out after {ms}ms` (client-side timeout).
pub fn rpc_timed_out(method: &str, ms: u128) -> String {
    format!("RPC call to {method} timed out after {ms}ms")
}
