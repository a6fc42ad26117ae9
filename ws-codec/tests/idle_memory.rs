//! Memory of an idle connection: the machine's own size (its queues and buffers start empty
//! and unallocated: `VecDeque::new`, `BytesMut::new`).

use agentwire_ws::{Config, Connection, Role};
use bytes::BytesMut;
use std::time::Instant;

#[test]
fn idle_connection_is_small() {
    let now = Instant::now();
    let mut c = Connection::new(Role::Server, Config::default(), now);
    let mut empty = BytesMut::new();
    c.handle_input(now, &mut empty);
    c.handle_timeout(now);
    assert!(c.poll_transmit().is_none() && c.poll_event().is_none());
    assert_eq!(
        empty.capacity(),
        0,
        "no read buffer reserved without a partial frame"
    );
    assert_eq!(c.outbound_bytes(), 0);
    let size = std::mem::size_of::<Connection>();
    println!("size_of::<Connection>() = {size}");
    assert!(size <= 640, "Connection grew to {size} bytes");
}
