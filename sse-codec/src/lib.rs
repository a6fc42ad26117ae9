//! Sans-IO, zero-copy Server-Sent Events codec.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod utf8;

pub use utf8::{NotUtf8, Utf8Bytes};
