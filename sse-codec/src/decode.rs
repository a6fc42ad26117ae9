//! The event stream decoder: WHATWG HTML §9.2.6 "Interpreting an event stream".

use agentwire_utf8::Utf8Bytes;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

const BOM: &[u8] = b"\xEF\xBB\xBF";
const MESSAGE: Utf8Bytes = Utf8Bytes::from_static("message");

/// Size limits of a [`Decoder`].
///
/// | limit | default | why |
/// |---|---|---|
/// | [`max_line`](Self::max_line) | 2 MiB | a single `data:` line carrying a large JSON document (1 MiB is seen in practice) fits; a server that never sends a line end cannot make the client buffer more |
/// | [`max_event`](Self::max_event) | 8 MiB | the sum of an event's `data` lines; four maximal lines fit, a server that never sends a blank line cannot grow the data buffer past it |
///
/// Exceeding a limit yields [`DecodeError::LineTooLong`] or [`DecodeError::EventTooLarge`]; the
/// event in progress is dropped and decoding resumes after the next blank line, so memory stays
/// at the bound whatever the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest line, in bytes, without its line terminator. The default is 2 MiB.
    pub max_line: usize,
    /// Largest event, in bytes: its data plus event type. The default is 8 MiB.
    pub max_event: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 2 << 20,
            max_event: 8 << 20,
        }
    }
}

impl Limits {
    /// Sets [`max_line`](Self::max_line).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// Sets [`max_event`](Self::max_event).
    pub fn max_event(mut self, bytes: usize) -> Self {
        self.max_event = bytes;
        self
    }
}

/// A limit was exceeded. The decoder has already recovered: the event in progress was dropped
/// and decoding goes on after the next blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line was longer than [`Limits::max_line`].
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// An event's data grew past [`Limits::max_event`].
    EventTooLarge {
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => write!(f, "line longer than {limit} bytes"),
            Self::EventTooLarge { limit } => write!(f, "event larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A dispatched event: the `MessageEvent` a browser's `EventSource` would fire.
///
/// Each field is a view of the input when it came from one line of valid UTF-8; data spread
/// over several `data:` lines is joined once into a new buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event type: the last `event:` value, or `message`.
    pub event_type: Utf8Bytes,
    /// The data: `data:` values joined with LF.
    pub data: Utf8Bytes,
    /// The last event ID string when the event was dispatched (persists across events).
    pub last_event_id: Utf8Bytes,
}

impl Event {
    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The data.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The last event ID.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }
}

/// The data buffer of the event being built.
#[derive(Debug, Default)]
enum Data {
    #[default]
    Empty,
    /// One `data:` line so far: `start..end` of the current region, which is valid UTF-8.
    Range(usize, usize),
    /// One line held as its own text (from an earlier region, or with U+FFFD replacements).
    Held(Utf8Bytes),
    /// Several lines joined with LF.
    Many(String),
}

/// An event as [`Decoder::poll_event_ref`] and [`Events::iter`] return it: borrowed from the decoder, with no
/// allocation and no reference count touched. Valid until the decoder is used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRef<'a> {
    /// The event type: the last `event:` value, or `message`.
    pub event_type: &'a str,
    /// The data: `data:` values joined with LF.
    pub data: &'a str,
    /// The last event ID string when the event was dispatched.
    pub last_event_id: &'a str,
}

impl EventRef<'_> {
    /// An owned copy. ([`Decoder::poll_event`] gives owned events without copying.)
    pub fn to_event(&self) -> Event {
        Event {
            event_type: Utf8Bytes::from(self.event_type.to_owned()),
            data: Utf8Bytes::from(self.data.to_owned()),
            last_event_id: Utf8Bytes::from(self.last_event_id.to_owned()),
        }
    }
}

/// Largest first allocation of a batch's event list, in events (32 bytes each).
const MAX_BATCH_HINT: usize = 4096;

/// No index (of [`Events`]' strings).
const NONE: u32 = u32::MAX;

/// A dispatched event: its type (`None` for `message`) and data.
type Ready = (Option<Utf8Bytes>, Data);

/// What the fast line loop stopped at.
enum Fast {
    /// An event was dispatched, or a limit hit.
    Ready(Result<Ready, DecodeError>),
    /// The region is used up.
    End,
    /// A line the general interpreter must handle.
    Other,
}

/// A batch of events from [`Decoder::poll_events`]: the events dispatched by one fed chunk,
/// sharing one reference to it.
///
/// Iterating by reference gives [`EventRef`] views (no reference count touched); iterating
/// by value, or [`event`](Self::event), gives owned [`Event`]s that share the chunk.
#[derive(Debug, Clone)]
pub struct Events {
    /// The region the single-line events are views of.
    text: Utf8Bytes,
    list: Vec<Entry>,
    /// Data that is not a view of `text`, event types and IDs, indexed by [`Entry`].
    strings: Vec<Utf8Bytes>,
}

/// One event of [`Events`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The data, `text[start..end]`, unless `own` is set.
    start: usize,
    end: usize,
    /// Index of the data in `strings`, or `NONE`.
    own: u32,
    /// Index of the event type in `strings`, or `NONE` for `message`.
    ty: u32,
    /// Index of the last event ID in `strings`, or `NONE` for the empty string.
    id: u32,
}

impl Events {
    /// The number of events.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// `true` if there are none (never for a batch from [`Decoder::poll_events`]).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The `i`-th event, borrowed.
    pub fn get(&self, i: usize) -> Option<EventRef<'_>> {
        self.list.get(i).map(|e| self.view(e))
    }

    /// The `i`-th event, owned (its fields share the batch's buffers).
    pub fn event(&self, i: usize) -> Option<Event> {
        self.list.get(i).map(|e| self.owned(e))
    }

    /// The events, borrowed.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            batch: self,
            entries: self.list.iter(),
        }
    }

    fn string(&self, i: u32) -> Option<&Utf8Bytes> {
        if i == NONE {
            None
        } else {
            self.strings.get(i as usize)
        }
    }

    /// Adds a dispatched event; `last_id` is the index of the last ID pushed.
    #[inline]
    fn push(
        &mut self,
        event_type: Option<Utf8Bytes>,
        data: Data,
        id: &Utf8Bytes,
        last_id: &mut u32,
    ) {
        let (start, end, own) = match data {
            Data::Range(start, end) => (start, end, NONE),
            Data::Held(text) => (0, 0, self.push_string(text)),
            Data::Many(joined) => (0, 0, self.push_string(joined.into())),
            Data::Empty => (0, 0, NONE),
        };
        let ty = match event_type {
            Some(t) => self.push_string(t),
            None => NONE,
        };
        if id.is_empty() {
            *last_id = NONE;
        } else if *last_id == NONE || self.strings[*last_id as usize] != *id {
            *last_id = self.push_string(id.clone());
        }
        self.list.push(Entry {
            start,
            end,
            own,
            ty,
            id: *last_id,
        });
    }

    fn push_string(&mut self, s: Utf8Bytes) -> u32 {
        self.strings.push(s);
        u32::try_from(self.strings.len() - 1).unwrap_or(NONE)
    }

    #[inline]
    fn view<'a>(&'a self, e: &Entry) -> EventRef<'a> {
        let data = match self.string(e.own) {
            Some(s) => s.as_str(),
            None => self.text.get(e.start..e.end).unwrap_or(""),
        };
        EventRef {
            event_type: self.string(e.ty).map_or("message", |s| s.as_str()),
            data,
            last_event_id: self.string(e.id).map_or("", |s| s.as_str()),
        }
    }

    fn owned(&self, e: &Entry) -> Event {
        let data = match self.string(e.own) {
            Some(s) => s.clone(),
            None => self.text.slice(e.start, e.end).unwrap_or_default(),
        };
        Event {
            event_type: self.string(e.ty).cloned().unwrap_or(MESSAGE),
            data,
            last_event_id: self.string(e.id).cloned().unwrap_or_default(),
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = EventRef<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The events of an [`Events`] batch, borrowed.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    batch: &'a Events,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = EventRef<'a>;
    #[inline]
    fn next(&mut self) -> Option<EventRef<'a>> {
        self.entries.next().map(|e| self.batch.view(e))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = std::vec::IntoIter<Event>;
    fn into_iter(self) -> Self::IntoIter {
        let owned: Vec<Event> = self.list.iter().map(|e| self.owned(e)).collect();
        owned.into_iter()
    }
}

/// Sans-IO decoder of a `text/event-stream` body.
///
/// Hand it the body's bytes in chunks of any size ([`handle_input`](Self::handle_input) takes
/// `Bytes` without copying, [`handle_input_slice`](Self::handle_input_slice) copies once), then
/// call [`poll_event`](Self::poll_event) (or [`poll_events`](Self::poll_events) for a batch)
/// until it returns `None`. At the end of the body call [`handle_eof`](Self::handle_eof): an
/// unterminated final event is discarded, as the
/// specification requires. The decoder remembers the last event ID and the server's `retry:`
/// value across streams, so the same decoder can be reused after a reconnection.
///
/// ```
/// use agentwire_sse::Decoder;
///
/// let mut decoder = Decoder::new();
/// decoder.handle_input_slice(b"event: greeting\nid: 1\ndata: hel");
/// assert!(decoder.poll_event().is_none()); // need more bytes
/// decoder.handle_input_slice(b"lo\ndata: world\n\n");
/// let event = decoder.poll_event().unwrap().unwrap();
/// assert_eq!(event.event_type(), "greeting");
/// assert_eq!(event.data(), "hello\nworld");
/// assert_eq!(event.last_event_id(), "1");
/// ```
///
/// [`poll_event_ref`](Self::poll_event_ref) is the same decoder with borrowed events: no
/// reference count, no allocation for single-line data. [`poll_events`](Self::poll_events)
/// hands out the events of a whole read at once, sharing one reference to it.
///
/// Work per input byte: one forward line-end search (a line's first 32 bytes in registers, the
/// rest with `memchr2`), one UTF-8 validation of each chunk of complete lines, no copy of
/// single-line fields. Bytes already scanned are never scanned again: an incomplete line is
/// searched backwards once when it arrives, and its completion is found by searching only the
/// new bytes.
#[derive(Debug)]
pub struct Decoder {
    /// Chunks fed but not yet looked at.
    queue: VecDeque<Bytes>,
    /// An incomplete line: no terminator seen yet. At most `limits.max_line` bytes.
    partial: BytesMut,
    /// Complete lines ready to be interpreted; its last byte is a line terminator.
    region: Bytes,
    /// Where the next line of `region` starts.
    pos: usize,
    /// `region` as text, when it is valid UTF-8 as a whole (the common case).
    region_text: Option<Utf8Bytes>,
    /// `region` is one line joined from `partial`, so it is not searched again.
    region_single: bool,
    /// The last line was long: search the next one with `memchr2` straight away.
    long_lines: bool,
    /// Bytes of the region's chunk follow the region (they went to `partial`).
    tail_follows: bool,
    /// The last byte seen was a CR: an LF that follows belongs to the same line end.
    skip_lf: bool,
    /// The stream has not yet shown whether it starts with a BOM.
    bom_pending: bool,
    /// Dropping bytes up to the end of an over-long line.
    discarding_line: bool,
    /// A limit error to report once the lines before it are interpreted.
    deferred: Option<DecodeError>,
    /// The event being built.
    b: Builder,
    /// The last event handed out by `poll_event_ref`.
    current: (Option<Utf8Bytes>, Data),
    /// A limit error met while a batch was being collected, reported by the next poll.
    error_next: Option<DecodeError>,
    /// Events in the last batch: the next batch's first allocation.
    batch_hint: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            queue: VecDeque::new(),
            partial: BytesMut::new(),
            region: Bytes::new(),
            pos: 0,
            region_text: None,
            region_single: false,
            long_lines: false,
            tail_follows: false,
            skip_lf: false,
            bom_pending: true,
            discarding_line: false,
            deferred: None,
            b: Builder::new(limits),
            current: (None, Data::Empty),
            error_next: None,
            batch_hint: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.b.limits
    }

    /// Input: a chunk of the body, taken without copying; dispatched fields are views of it.
    pub fn handle_input(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.queue.push_back(chunk);
        }
    }

    /// Input: a chunk of the body, copied once (use [`handle_input`](Self::handle_input) when
    /// the chunk is already `Bytes`).
    pub fn handle_input_slice(&mut self, chunk: &[u8]) {
        if !chunk.is_empty() {
            self.queue.push_back(Bytes::copy_from_slice(chunk));
        }
    }

    /// The last event ID string: what a client sends as `Last-Event-ID` when it reconnects.
    ///
    /// It is updated when an event is dispatched (or a block without data ends), not when the
    /// `id:` line is read, so an `id:` in an unterminated final block does not count.
    pub fn last_event_id(&self) -> &Utf8Bytes {
        &self.b.last_event_id
    }

    /// Sets the last event ID string, e.g. to resume a stream saved elsewhere.
    pub fn set_last_event_id(&mut self, id: Utf8Bytes) {
        self.b.last_event_id = id;
        // As before: the next dispatch sets it from the ID buffer again.
        self.b.id_changed = true;
    }

    /// The reconnection time the server asked for with its last valid `retry:` field.
    pub fn retry(&self) -> Option<Duration> {
        self.b.retry.map(Duration::from_millis)
    }

    /// Bytes held for lines not yet complete or not yet interpreted.
    pub fn buffered(&self) -> usize {
        self.partial.len()
            + (self.region.len() - self.pos)
            + self.queue.iter().map(Bytes::len).sum::<usize>()
    }

    /// The end of the body: discards the incomplete line and the event being built, and gets
    /// ready for the next stream (a leading BOM is stripped again). The last event ID string
    /// and the reconnection time are kept.
    ///
    /// Call it after [`poll_event`](Self::poll_event) has returned `None`; any bytes not yet
    /// interpreted are discarded too.
    pub fn handle_eof(&mut self) {
        self.queue.clear();
        self.partial = BytesMut::new();
        self.region = Bytes::new();
        self.region_text = None;
        self.current = (None, Data::Empty);
        self.pos = 0;
        self.skip_lf = false;
        self.bom_pending = true;
        self.discarding_line = false;
        self.b.skipping_event = false;
        self.deferred = None;
        self.error_next = None;
        self.b.reset_event();
        self.b.id_buffer = Utf8Bytes::new();
        self.b.id_changed = true;
    }

    /// Output: the next dispatched event, `None` when more input is needed, or a limit error
    /// (after which decoding continues: poll again).
    ///
    /// Fields are views of the input ([`Utf8Bytes`] over the fed `Bytes`); only data spread
    /// over several lines, or holding invalid UTF-8, is copied. Each event touches the input's
    /// reference count (once when built, once when dropped): to decode many small events,
    /// [`poll_events`](Self::poll_events) shares one reference among all of a read's events.
    pub fn poll_event(&mut self) -> Option<Result<Event, DecodeError>> {
        let (event_type, data) = match self.next_raw()? {
            Ok(ready) => ready,
            Err(e) => return Some(Err(e)),
        };
        let data = match data {
            Data::Range(start, end) => self.text(start, end),
            Data::Held(text) => text,
            Data::Many(joined) => Utf8Bytes::from(joined),
            Data::Empty => Utf8Bytes::new(),
        };
        Some(Ok(Event {
            event_type: event_type.unwrap_or(MESSAGE),
            data,
            last_event_id: cheap_clone(&self.b.last_event_id),
        }))
    }

    /// Like [`poll_event`](Self::poll_event), but the event borrows from the decoder: no
    /// reference count is touched and nothing is allocated for single-line data. Valid until
    /// the decoder is used again.
    pub fn poll_event_ref(&mut self) -> Option<Result<EventRef<'_>, DecodeError>> {
        let ready = match self.next_raw()? {
            Ok(ready) => ready,
            Err(e) => return Some(Err(e)),
        };
        self.current = ready;
        let data = match &self.current.1 {
            Data::Range(start, end) => match &self.region_text {
                Some(text) => text.get(*start..*end).unwrap_or(""),
                None => "",
            },
            Data::Held(text) => text.as_str(),
            Data::Many(joined) => joined.as_str(),
            Data::Empty => "",
        };
        Some(Ok(EventRef {
            event_type: self.current.0.as_deref().unwrap_or("message"),
            data,
            last_event_id: &self.b.last_event_id,
        }))
    }

    /// Output, in batches: every event dispatched by the lines of one fed chunk, `None` when
    /// more input is needed, or a limit error (after which decoding continues: poll again).
    ///
    /// The batch holds one reference to the chunk, shared by all its single-line events, so a
    /// stream of small events costs one reference-count pair per read instead of one per
    /// event. Iterate it by reference for borrowed views ([`EventRef`]), or by value for owned
    /// [`Event`]s.
    ///
    /// ```
    /// use agentwire_sse::Decoder;
    /// use bytes::Bytes;
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.handle_input(Bytes::from_static(b"data: a\n\ndata: b\nid: 2\n\ndata: c"));
    /// let batch = decoder.poll_events().unwrap().unwrap();
    /// let data: Vec<&str> = batch.iter().map(|e| e.data).collect();
    /// assert_eq!(data, ["a", "b"]);
    /// assert_eq!(batch.get(1).unwrap().last_event_id, "2");
    /// assert!(decoder.poll_events().is_none()); // "data: c" is not complete yet
    /// ```
    pub fn poll_events(&mut self) -> Option<Result<Events, DecodeError>> {
        if let Some(e) = self.error_next.take() {
            return Some(Err(e));
        }
        let mut batch = Events {
            text: Utf8Bytes::new(),
            list: Vec::with_capacity(self.batch_hint),
            strings: Vec::new(),
        };
        let mut last_id = NONE;
        loop {
            let mut emit = |id: &Utf8Bytes, (event_type, data): Ready| {
                batch.push(event_type, data, id, &mut last_id);
                None
            };
            match self.scan_region_with(&mut emit) {
                None | Some(Ok(_)) => {}
                Some(Err(e)) if batch.list.is_empty() => return Some(Err(e)),
                Some(Err(e)) => self.error_next = Some(e),
            }
            if !batch.list.is_empty() {
                if let Some(text) = &self.region_text {
                    batch.text = text.clone();
                }
                self.batch_hint = batch.list.len().min(MAX_BATCH_HINT);
                return Some(Ok(batch));
            }
            if let Some(error) = self.deferred.take() {
                return Some(Err(self.b.fail(error)));
            }
            if !self.fill_region() && self.deferred.is_none() {
                return None;
            }
        }
    }

    /// `region[start..end]` as text (the region is valid UTF-8 and the bounds are ASCII).
    fn text(&self, start: usize, end: usize) -> Utf8Bytes {
        match &self.region_text {
            Some(text) => text.slice(start, end).unwrap_or_default(),
            None => Utf8Bytes::new(),
        }
    }

    /// The interpretation loop: the next event's type and data, `None` when more input is
    /// needed.
    fn next_raw(&mut self) -> Option<Result<(Option<Utf8Bytes>, Data), DecodeError>> {
        if let Some(e) = self.error_next.take() {
            return Some(Err(e));
        }
        loop {
            if let Some(out) = self.scan_region() {
                return Some(out);
            }
            if let Some(error) = self.deferred.take() {
                return Some(Err(self.b.fail(error)));
            }
            if !self.fill_region() && self.deferred.is_none() {
                return None;
            }
        }
    }

    /// Interprets lines of the current region until an event is dispatched or a limit is hit;
    /// `None` when the region is used up.
    #[inline]
    fn scan_region(&mut self) -> Option<Result<Ready, DecodeError>> {
        self.scan_region_with(&mut |_, ready| Some(ready))
    }

    /// Interprets lines of the current region, handing each dispatched event to `emit` with
    /// the last event ID; stops when `emit` gives the event back (returned), at a limit error,
    /// or (`None`) when the region is used up.
    #[inline(always)]
    fn scan_region_with<F>(&mut self, emit: &mut F) -> Option<Result<Ready, DecodeError>>
    where
        F: FnMut(&Utf8Bytes, Ready) -> Option<Ready>,
    {
        while self.pos < self.region.len() {
            // (A `region_single` line is searched again here: cheaper than the general path.)
            if !self.b.skipping_event {
                match self.fast_lines(emit) {
                    Fast::Ready(out) => return Some(out),
                    Fast::End => return None,
                    Fast::Other => {}
                }
            }
            match self.step() {
                None => {}
                Some(Ok(ready)) => {
                    if let Some(ready) = emit(&self.b.last_event_id, ready) {
                        return Some(Ok(ready));
                    }
                }
                Some(Err(e)) => return Some(Err(e)),
            }
        }
        None
    }

    /// The common lines, without the general field dispatcher: `data:` lines and blank lines
    /// ending in LF, in a region of valid UTF-8. Stops at any other line (`Fast::Other`,
    /// `pos` at its start) for [`step`](Self::step) to interpret.
    #[inline(always)]
    fn fast_lines<F>(&mut self, emit: &mut F) -> Fast
    where
        F: FnMut(&Utf8Bytes, Ready) -> Option<Ready>,
    {
        let Some(text) = &self.region_text else {
            return Fast::Other;
        };
        let bytes: &[u8] = text.as_bytes();
        let b = &mut self.b;
        let max_line = b.limits.max_line;
        let mut pos = self.pos;
        loop {
            let Some(&first) = bytes.get(pos) else {
                self.pos = pos;
                return Fast::End;
            };
            if first == b'\n' {
                pos += 1;
                if let Some(ready) = b.dispatch() {
                    if let Some(ready) = emit(&b.last_event_id, ready) {
                        self.pos = pos;
                        return Fast::Ready(Ok(ready));
                    }
                }
                continue;
            }
            if bytes.get(pos..pos + 5) != Some(b"data:") {
                self.pos = pos;
                return Fast::Other;
            }
            // The region ends with a line terminator, so the search succeeds.
            let after_colon = pos + 5;
            let Some(found) = crate::scan::find_line_end(&bytes[after_colon..], self.long_lines)
            else {
                self.pos = pos;
                return Fast::Other;
            };
            let end = after_colon + found;
            if bytes[end] != b'\n' || end - pos > max_line {
                self.pos = pos;
                return Fast::Other;
            }
            self.long_lines = end - pos > crate::scan::SHORT_LINE;
            let value = after_colon + usize::from(after_colon < end && bytes[after_colon] == b' ');
            // The most common event of all, one `data:` line and a blank line, with no data
            // before it: dispatched here, its range never stored in the builder.
            if matches!(b.data, Data::Empty)
                && bytes.get(end + 1) == Some(&b'\n')
                && b.event_size + (end - value) <= b.limits.max_event
            {
                pos = end + 2;
                let ready = b.dispatch_single(value, end);
                if let Some(ready) = emit(&b.last_event_id, ready) {
                    self.pos = pos;
                    return Fast::Ready(Ok(ready));
                }
                continue;
            }
            pos = end + 1;
            if let Err(e) = b.data_line(text, value, end) {
                self.pos = pos;
                return Fast::Ready(Err(e));
            }
        }
    }

    /// Interprets one line of the region (any field, CR or CRLF line ends, invalid UTF-8).
    fn step(&mut self) -> Option<Result<(Option<Utf8Bytes>, Data), DecodeError>> {
        let region = &self.region;
        let start = self.pos;
        let end = if self.region_single {
            // One line joined from `partial`: its bytes were searched when they came.
            region.len() - 1
        } else {
            // The region ends with a terminator, so the search always succeeds.
            start + crate::scan::find_line_end(&region[start..], self.long_lines).unwrap_or(0)
        };
        let next = end + 1;
        self.long_lines = end - start > crate::scan::SHORT_LINE;
        if region[end] == b'\r' {
            if next == region.len() {
                // The byte after this CR is the first of the next chunk, unless the
                // chunk the region came from went on with an incomplete line.
                self.skip_lf = !self.tail_follows;
                self.pos = next;
            } else if region[next] == b'\n' {
                self.pos = next + 1;
            } else {
                self.pos = next;
            }
        } else {
            self.pos = next;
        }
        if end - start > self.b.limits.max_line {
            let limit = self.b.limits.max_line;
            return Some(Err(self.b.fail(DecodeError::LineTooLong { limit })));
        }
        self.b.line(region, self.region_text.as_ref(), start, end)
    }

    /// Moves the next complete lines from the queue into `region`. Returns `false` when the
    /// queue is used up (or a deferred error must be reported first).
    fn fill_region(&mut self) -> bool {
        while let Some(mut chunk) = self.queue.pop_front() {
            if self.bom_pending {
                match self.strip_bom(chunk) {
                    Some(rest) => chunk = rest,
                    None => continue,
                }
            }
            if self.skip_lf && !chunk.is_empty() {
                self.skip_lf = false;
                if chunk[0] == b'\n' {
                    chunk.advance(1);
                }
            }
            if self.discarding_line {
                match memchr::memchr2(b'\n', b'\r', &chunk) {
                    None => continue,
                    Some(end) => {
                        self.discarding_line = false;
                        self.consume_line_end(&mut chunk, end);
                    }
                }
            }
            if chunk.is_empty() {
                continue;
            }
            if self.partial.is_empty() {
                match memchr::memrchr2(b'\n', b'\r', &chunk) {
                    Some(last) => {
                        let tail = chunk.split_off(last + 1);
                        self.set_region(chunk, false);
                        self.tail_follows = !tail.is_empty();
                        if !tail.is_empty() {
                            self.append_partial(&tail);
                        }
                        return true;
                    }
                    None => {
                        self.append_partial(&chunk);
                        if self.deferred.is_some() {
                            return false;
                        }
                    }
                }
            } else {
                match memchr::memchr2(b'\n', b'\r', &chunk) {
                    Some(end) => {
                        if self.partial.len() + end > self.b.limits.max_line {
                            self.partial = BytesMut::new();
                            self.deferred = Some(DecodeError::LineTooLong {
                                limit: self.b.limits.max_line,
                            });
                            self.consume_line_end(&mut chunk, end);
                            if !chunk.is_empty() {
                                self.queue.push_front(chunk);
                            }
                            return false;
                        }
                        self.partial.extend_from_slice(&chunk[..=end]);
                        let rest = chunk.slice(end + 1..);
                        if !rest.is_empty() {
                            self.queue.push_front(rest);
                        }
                        let line = self.partial.split().freeze();
                        self.set_region(line, true);
                        self.tail_follows = false;
                        return true;
                    }
                    None => {
                        self.append_partial(&chunk);
                        if self.deferred.is_some() {
                            return false;
                        }
                    }
                }
            }
        }
        false
    }

    /// Makes `region` (which ends with a line terminator) the lines to interpret next. A
    /// `single` region is one line joined from `partial`, already known to hold no other
    /// terminator.
    fn set_region(&mut self, region: Bytes, single: bool) {
        self.region_single = single;
        if let Data::Range(start, end) = self.b.data {
            self.b.data = Data::Held(self.text(start, end));
        }
        self.region_text = Utf8Bytes::try_from_bytes(region.clone()).ok();
        self.region = region;
        self.pos = 0;
    }

    /// Adds bytes without a line terminator to the incomplete line, or starts discarding it
    /// if it grows past the line limit.
    fn append_partial(&mut self, bytes: &[u8]) {
        if self.partial.len() + bytes.len() > self.b.limits.max_line {
            self.partial = BytesMut::new();
            self.discarding_line = true;
            self.deferred = Some(DecodeError::LineTooLong {
                limit: self.b.limits.max_line,
            });
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Drops `chunk` up to and including the line terminator at `end`.
    fn consume_line_end(&mut self, chunk: &mut Bytes, end: usize) {
        let cr = chunk[end] == b'\r';
        chunk.advance(end + 1);
        if cr {
            match chunk.first() {
                Some(b'\n') => chunk.advance(1),
                Some(_) => {}
                None => self.skip_lf = true,
            }
        }
    }

    /// Strips one leading BOM. Returns the chunk to go on with, or `None` while the first
    /// bytes could still be a BOM.
    fn strip_bom(&mut self, chunk: Bytes) -> Option<Bytes> {
        let mut chunk = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(&chunk);
            std::mem::take(&mut self.partial).freeze()
        };
        if chunk.len() < BOM.len() && BOM.starts_with(&chunk) {
            self.partial.extend_from_slice(&chunk);
            return None;
        }
        self.bom_pending = false;
        if chunk.starts_with(BOM) {
            chunk.advance(BOM.len());
        }
        Some(chunk)
    }
}

/// The event being built and the state that outlives events (WHATWG's buffers).
#[derive(Debug)]
struct Builder {
    limits: Limits,
    /// Ignoring fields until the next blank line (after a limit was hit).
    skipping_event: bool,
    data: Data,
    event_size: usize,
    event_type: Option<Utf8Bytes>,
    id_buffer: Utf8Bytes,
    /// `id_buffer` may differ from `last_event_id`: the next dispatch copies it.
    id_changed: bool,
    last_event_id: Utf8Bytes,
    retry: Option<u64>,
    /// Size of the last multi-line data: the first allocation for the next one, so a steady
    /// stream of large events does not regrow its buffer line by line.
    many_hint: usize,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            skipping_event: false,
            data: Data::Empty,
            event_size: 0,
            event_type: None,
            id_buffer: Utf8Bytes::new(),
            id_changed: false,
            last_event_id: Utf8Bytes::new(),
            retry: None,
            many_hint: 0,
        }
    }

    /// Drops the event in progress and ignores fields up to the next blank line.
    fn fail(&mut self, error: DecodeError) -> DecodeError {
        self.reset_event();
        self.skipping_event = true;
        error
    }

    /// One line, `region[start..end]` without its terminator; `text` is the region as text
    /// when it is valid UTF-8.
    #[inline]
    fn line(
        &mut self,
        region: &Bytes,
        text: Option<&Utf8Bytes>,
        start: usize,
        end: usize,
    ) -> Option<Result<(Option<Utf8Bytes>, Data), DecodeError>> {
        let line = &region[start..end];
        if line.is_empty() {
            if self.skipping_event {
                self.skipping_event = false;
                return None;
            }
            return self.dispatch().map(Ok);
        }
        if self.skipping_event || line[0] == b':' {
            return None;
        }
        // Every field name we act on is at most 5 bytes ("retry"), so the colon that matters is
        // among the first 6 bytes; a longer name is unknown and ignored either way.
        let colon = line[..line.len().min(6)].iter().position(|&b| b == b':');
        let (name, value_start) = match colon {
            Some(colon) => {
                let mut value = start + colon + 1;
                if value < end && region[value] == b' ' {
                    value += 1;
                }
                (&line[..colon], value)
            }
            None if line.len() <= 5 => (line, end),
            None => return None,
        };
        let owned_text = || match text {
            Some(t) => t.slice(value_start, end).unwrap_or_default(),
            None => Utf8Bytes::from_bytes_lossy(region.slice(value_start..end)),
        };
        match name {
            b"data" => match text {
                Some(text) => {
                    if let Err(e) = self.data_line(text, value_start, end) {
                        return Some(Err(e));
                    }
                }
                None => {
                    let piece = String::from_utf8_lossy(&region[value_start..end]);
                    if let Err(e) = self.data_piece(None, &piece, None) {
                        return Some(Err(e));
                    }
                }
            },
            b"event" => {
                let value = owned_text();
                self.event_size =
                    self.event_size - self.event_type.as_ref().map_or(0, |t| t.len()) + value.len();
                if self.event_size > self.limits.max_event {
                    let limit = self.limits.max_event;
                    return Some(Err(self.fail(DecodeError::EventTooLarge { limit })));
                }
                self.event_type = Some(value);
            }
            b"id" if memchr::memchr(0, &region[value_start..end]).is_none() => {
                self.id_buffer = owned_text();
                self.id_changed = true;
            }
            b"retry"
                if value_start < end && region[value_start..end].iter().all(u8::is_ascii_digit) =>
            {
                let ms = region[value_start..end].iter().fold(0u64, |ms, d| {
                    ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(ms);
            }
            _ => {}
        }
        None
    }

    /// A `data:` line whose value is `text[start..end]` (`start` and `end` next to ASCII bytes).
    #[inline]
    fn data_line(&mut self, text: &Utf8Bytes, start: usize, end: usize) -> Result<(), DecodeError> {
        let piece = text.get(start..end).unwrap_or("");
        self.data_piece(Some(text), piece, Some((start, end)))
    }

    /// Appends a data line's value; `range` is where it lies in the current region (`text`,
    /// when valid UTF-8), if it is a view of it.
    #[inline]
    fn data_piece(
        &mut self,
        text: Option<&Utf8Bytes>,
        piece: &str,
        range: Option<(usize, usize)>,
    ) -> Result<(), DecodeError> {
        self.event_size += piece.len() + usize::from(!matches!(self.data, Data::Empty));
        if self.event_size > self.limits.max_event {
            let limit = self.limits.max_event;
            return Err(self.fail(DecodeError::EventTooLarge { limit }));
        }
        match &mut self.data {
            // The common case of long data: append in place.
            Data::Many(joined) => {
                joined.push('\n');
                joined.push_str(piece);
            }
            Data::Empty => {
                self.data = match range {
                    Some((start, end)) => Data::Range(start, end),
                    None => Data::Held(Utf8Bytes::from(piece.to_owned())),
                };
            }
            Data::Held(first) => {
                self.data = Data::Many(join(first, piece, self.many_hint));
            }
            Data::Range(first_start, first_end) => {
                // A range of the current region, which is `text` (ranges exist only in
                // regions of valid UTF-8).
                let first = text
                    .and_then(|t| t.get(*first_start..*first_end))
                    .unwrap_or("");
                self.data = Data::Many(join(first, piece, self.many_hint));
            }
        }
        Ok(())
    }

    /// "Dispatch the event" for an event whose only data line is `start..end` of the region,
    /// not yet added to the builder.
    #[inline(always)]
    fn dispatch_single(&mut self, start: usize, end: usize) -> Ready {
        if self.id_changed {
            self.last_event_id = cheap_clone(&self.id_buffer);
            self.id_changed = false;
        }
        let event_type = match self.event_type.take() {
            Some(t) if !t.is_empty() => Some(t),
            _ => None,
        };
        self.event_size = 0;
        (event_type, Data::Range(start, end))
    }

    /// WHATWG "dispatch the event": the event's type (`None` for `message`) and its data.
    #[inline]
    fn dispatch(&mut self) -> Option<(Option<Utf8Bytes>, Data)> {
        if self.id_changed {
            self.last_event_id = cheap_clone(&self.id_buffer);
            self.id_changed = false;
        }
        let data = std::mem::take(&mut self.data);
        if let Data::Empty = data {
            self.reset_event();
            return None;
        }
        if let Data::Many(joined) = &data {
            self.many_hint = joined.len().min(self.limits.max_event);
        }
        let event_type = self.event_type.take().filter(|t| !t.is_empty());
        self.event_size = 0;
        Some((event_type, data))
    }

    fn reset_event(&mut self) {
        self.data = Data::Empty;
        self.event_type = None;
        self.event_size = 0;
    }
}

/// Clones, skipping the vtable call for the (common) empty value.
fn cheap_clone(s: &Utf8Bytes) -> Utf8Bytes {
    if s.is_empty() {
        Utf8Bytes::new()
    } else {
        s.clone()
    }
}

/// `first`, LF, `second`, in a buffer of at least `hint` bytes.
fn join(first: &str, second: &str, hint: usize) -> String {
    let mut joined = String::with_capacity((first.len() + 1 + second.len()).max(hint).max(128));
    joined.push_str(first);
    joined.push('\n');
    joined.push_str(second);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(decoder: &mut Decoder) -> Vec<Result<Event, DecodeError>> {
        let mut out = Vec::new();
        loop {
            match decoder.poll_event() {
                Some(e) => out.push(e),
                None => return out,
            }
        }
    }

    #[test]
    fn single_line_data_points_into_the_input() {
        let input = Bytes::from_static(b"id: 7\nevent: tick\ndata: {\"token\":\"hello\"}\n\n");
        let range = input.as_ptr_range();
        let mut d = Decoder::new();
        d.handle_input(input.clone());
        let e = d.poll_event().unwrap().unwrap();
        assert_eq!(e.data(), "{\"token\":\"hello\"}");
        for field in [&e.data, &e.event_type, &e.last_event_id] {
            assert!(
                range.contains(&field.as_bytes().as_ptr()),
                "{field:?} was copied"
            );
        }
    }

    #[test]
    fn line_too_long_recovers_at_blank_line() {
        let limits = Limits::default().max_line(16);
        for split in 0..60 {
            let input = b"data: a\n\ndata: 0123456789abcdefghij\ndata: b\n\ndata: c\n\n";
            let mut d = Decoder::with_limits(limits);
            d.handle_input_slice(&input[..split.min(input.len())]);
            let mut out = all(&mut d);
            d.handle_input_slice(&input[split.min(input.len())..]);
            out.extend(all(&mut d));
            let got: Vec<_> = out
                .iter()
                .map(|r| r.clone().map(|e| e.data().to_owned()))
                .collect();
            assert_eq!(
                got,
                vec![
                    Ok("a".into()),
                    Err(DecodeError::LineTooLong { limit: 16 }),
                    Ok("c".into())
                ],
                "split {split}"
            );
            assert!(d.buffered() <= 16);
        }
    }

    #[test]
    fn unterminated_line_is_bounded() {
        let mut d = Decoder::with_limits(Limits::default().max_line(100));
        let mut errors = 0;
        for _ in 0..1000 {
            d.handle_input_slice(&[b'x'; 64]);
            while let Some(Err(e)) = d.poll_event() {
                assert_eq!(e, DecodeError::LineTooLong { limit: 100 });
                errors += 1;
            }
            assert!(d.buffered() <= 100);
        }
        assert_eq!(errors, 1);
        d.handle_input_slice(b"\n\ndata: ok\n\n");
        assert_eq!(d.poll_event().unwrap().unwrap().data(), "ok");
    }

    #[test]
    fn event_too_large_recovers() {
        let mut d = Decoder::with_limits(Limits::default().max_event(10));
        d.handle_input_slice(b"data: 123456\ndata: 7890\ndata: x\n\ndata: ok\n\n");
        assert_eq!(
            d.poll_event(),
            Some(Err(DecodeError::EventTooLarge { limit: 10 }))
        );
        assert_eq!(d.poll_event().unwrap().unwrap().data(), "ok");
    }

    #[test]
    fn reuse_after_eof_keeps_id_and_retry() {
        let mut d = Decoder::new();
        d.handle_input_slice(b"retry: 500\nid: 4\ndata: a\n\ndata: partial");
        assert_eq!(d.poll_event().unwrap().unwrap().data(), "a");
        assert!(d.poll_event().is_none());
        d.handle_eof();
        assert_eq!(d.last_event_id(), "4");
        assert_eq!(d.retry(), Some(Duration::from_millis(500)));
        d.handle_input_slice(b"\xEF\xBB\xBFdata: b\n\n");
        let e = d.poll_event().unwrap().unwrap();
        assert_eq!(e.data(), "b");
        // A new stream starts with an empty ID buffer (WHATWG), so dispatch resets it.
        assert_eq!(e.last_event_id(), "");
    }
}
