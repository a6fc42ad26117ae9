//! The Cloudflare Agents wire protocol: typed messages, classification, routing.
//!
//! Work in progress: see the workspace README.
