//! Sans-IO RFC 6455 WebSocket: frames, connection machine, handshake.
//!
//! Work in progress: see the workspace README.
