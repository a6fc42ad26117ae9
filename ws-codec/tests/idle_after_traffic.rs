//! After traffic, a drained connection gives its send buffer back: the heap it holds while
//! idle stays small (counted by a global allocator wrapper; one test in this binary, so no
//! other thread allocates meanwhile).

use agentwire_ws::{Config, Connection, Role};
use bytes::BytesMut;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts the bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn drained_connection_keeps_no_send_buffer() {
    let now = Instant::now();
    for role in [Role::Server, Role::Client] {
        let before = LIVE.load(Ordering::SeqCst);
        let mut c = Connection::new(role, Config::default(), now);
        for i in 0..50 {
            c.send_text(format!("small message {i}")).unwrap();
        }
        let mut sent = 0;
        while let Some(t) = c.poll_transmit() {
            let mut wire = BytesMut::new();
            t.write_to(&mut wire);
            sent += wire.len();
        }
        assert!(sent > 50 * 15);
        let held = LIVE.load(Ordering::SeqCst) - before;
        assert!(
            held < 2 * 1024,
            "{role:?}: a drained idle connection still holds {held} heap bytes"
        );
        drop(c);
    }
}
