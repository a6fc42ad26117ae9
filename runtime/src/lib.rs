//! An agent server speaking the Cloudflare Agents protocol over WebSocket and SSE.
//!
//! Work in progress: see the workspace README.
