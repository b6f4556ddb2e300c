//! Acknowledgements back to senders: whenever a connection's records are
//! durable in every sink (published by a checkpoint, or in a published
//! file without checkpoints), its [`AckTarget`] is told the count of its
//! records so far (rows and dead letters). [`StreamAcks`] keeps them for
//! one source: a TCP source with `acks = true` (the target writes
//! `ack <records>\n` back on the socket), or a push source (Flight DoPut:
//! the target is the call's `rows_durable`). A sender that loses the
//! connection resends from the record after the last ack it read, on a
//! new connection, and nothing is lost or written twice.
//!
//! The TCP protocol:
//!
//! The protocol for a sender: send records; to end, shut down the write
//! side and read acks until the connection ends — the last ack then counts
//! every record sent (a last record without a line end is a record, as
//! in a file). Records not yet handed on when roo stops are not counted
//! (and not written): the sender sends them again.
//!
//! Named streams, for exactly once across crashes: a connection may begin
//! with the line `stream NAME\n` (NAME: 1–128 printable ASCII characters
//! without spaces; a DoPut names it in its descriptor). roo answers at
//! once with `ack R\n`, R the records of
//! that stream durable in the last checkpoint (0 for a new name), and
//! counts the connection's records on from R. The sender sends from record
//! R (after a CSV header, which every connection repeats). Because R comes
//! from the checkpoint itself, a crash between a checkpoint and its ack
//! costs nothing: the sender learns R on reconnecting. Without a name the
//! count starts at 0 per connection, and a crash after a checkpoint but
//! before its ack reached the sender makes the sender send those records
//! again (at least once). One connection per name at a time; the names'
//! counts (at most [`STREAMS_MAX`], the least recently acknowledged
//! forgotten past it) travel in each checkpoint.
//!
//! A TCP connection keeps a duplicate of its socket here until its last
//! record is acknowledged, so the final ack reaches a sender that has
//! already shut down its side. Acks are written without blocking: a
//! sender that does not read them is not waited on; its line is finished
//! at the next ack, which then carries the newest count (acks are
//! cumulative, so a skipped one loses nothing).
//!
//! Bounded: one entry per connection (open ones, and closed ones until
//! their last batch is durable), each holding the end offsets of its
//! batches not yet durable (under checkpoints, at most 65,536 batches in
//! all: the pipeline cuts a checkpoint after that many, whatever the
//! interval; without, the batches in files not yet published) and at
//! most one unfinished line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

mod sender;

pub use sender::{ResumingSender, SendError};

use crate::framer::BatchSink;
use crate::parallel::StreamFramer;
use crate::IngestBatch;

/// Named streams whose counts are kept; past it the least recently
/// acknowledged is forgotten (its sender would start again from 0).
pub const STREAMS_MAX: usize = 65_536;

/// The longest `stream NAME` line, in bytes.
const GREETING_BYTES_MAX: usize = 160;

/// The acks of one source's connections (a TCP source's, a push source's
/// client streams).
#[derive(Default)]
pub struct StreamAcks {
    connections: Mutex<HashMap<Arc<str>, Acked>>,
    streams: Mutex<Streams>,
    /// Sources whose batches the sinks are asked to make durable now,
    /// without waiting for a file's rotation (a Kafka partition revoked).
    flush: Mutex<Vec<Arc<str>>>,
}

/// Where one connection's acks go.
pub trait AckTarget: Send {
    /// Tells the sender `records` are durable (`None`: nothing new, finish
    /// what is owed). Never blocks; false when the sender is gone.
    fn tell(&mut self, records: Option<u64>) -> bool;

    /// Every sink holds the connection durably through source offset
    /// `offset` (told before [`Self::tell`]; a Kafka partition stores it
    /// as the offset to commit).
    fn through(&mut self, _offset: u64) {}

    /// A snapshot of the connection's keyed state at source offset
    /// `position`, everything before which every sink now holds durably
    /// (a Kafka partition's cut, [`crate::Handover`]): the target keeps it
    /// where the partition's next owner finds it.
    fn checkpoint(&mut self, _position: u64, _snapshot: Vec<u8>) {}

    /// Whether everything told has been handed over.
    fn settled(&self) -> bool {
        true
    }

    /// No more acks: the connection ends after the last one told.
    fn finish(self: Box<Self>) {}
}

/// Named streams: records durable, and when last acknowledged (a counter,
/// for eviction).
#[derive(Default)]
struct Streams {
    counts: BTreeMap<String, (u64, u64)>,
    tick: u64,
}

/// Why a connection's stream name (a TCP greeting, a DoPut descriptor)
/// was refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the stream line is over {GREETING_BYTES_MAX} bytes; expected `stream NAME`")]
    TooLong,
    #[error("stream name {0:?}: expected 1-128 printable ASCII characters without spaces")]
    BadName(String),
    #[error("stream {0:?} already has a connection open; one at a time")]
    Busy(String),
}

/// A connection's first bytes while it is unknown whether they begin with
/// a `stream NAME` line.
#[derive(Default)]
pub(crate) struct Greeting {
    held: Vec<u8>,
}

/// What a greeting turned out to be.
pub(crate) enum Greeted {
    /// Not yet known: more bytes needed.
    Waiting,
    /// Decided: the stream's name (if the connection named one) and the
    /// bytes that follow, for the framer.
    Decided { name: Option<String>, rest: Vec<u8> },
}

impl Greeting {
    const PREFIX: &'static [u8] = b"stream ";

    /// Takes the next bytes of the connection.
    pub fn take(&mut self, data: &[u8]) -> Result<Greeted, StreamError> {
        self.held.extend_from_slice(data);
        let n = self.held.len().min(Self::PREFIX.len());
        if self.held[..n] != Self::PREFIX[..n] {
            return Ok(Greeted::Decided {
                name: None,
                rest: std::mem::take(&mut self.held),
            });
        }
        let Some(end) = memchr::memchr(b'\n', &self.held) else {
            if self.held.len() > GREETING_BYTES_MAX {
                return Err(StreamError::TooLong);
            }
            return Ok(Greeted::Waiting);
        };
        if end > GREETING_BYTES_MAX {
            return Err(StreamError::TooLong);
        }
        let line = &self.held[Self::PREFIX.len()..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name = String::from_utf8_lossy(line).into_owned();
        check_name(&name)?;
        Ok(Greeted::Decided {
            name: Some(name),
            rest: self.held[end + 1..].to_vec(),
        })
    }

    /// The connection ended while undecided: what it sent, for the framer.
    pub fn rest(self) -> Vec<u8> {
        self.held
    }
}

/// A count kept where another thread reads it: the newest count told.
impl AckTarget for Arc<std::sync::atomic::AtomicU64> {
    fn tell(&mut self, records: Option<u64>) -> bool {
        if let Some(n) = records {
            self.fetch_max(n, std::sync::atomic::Ordering::AcqRel);
        }
        true
    }
}

/// A stream name: 1–128 printable ASCII characters without spaces.
pub fn check_name(name: &str) -> Result<(), StreamError> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(StreamError::BadName(name.to_string()));
    }
    Ok(())
}

impl std::fmt::Debug for StreamAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.connections.lock().map_or(0, |c| c.len());
        write!(f, "StreamAcks({n} connections)")
    }
}

/// One connection's acknowledgement state.
struct Acked {
    target: Box<dyn AckTarget>,
    /// (end offset, records through it) of each batch handed on and not
    /// yet durable, oldest first.
    batches: VecDeque<(u64, u64)>,
    /// Records handed on so far (from `base`).
    records: u64,
    /// The named stream this connection carries, if it named one.
    stream: Option<String>,
    /// The source reads no more from the connection.
    closed: bool,
}

impl Acked {
    /// Nothing more to tell: closed, every batch acknowledged and handed over.
    fn done(&self) -> bool {
        self.closed && self.batches.is_empty() && self.target.settled()
    }
}

impl StreamAcks {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A connection opens; its acks go to `target`.
    pub fn open(&self, source: &Arc<str>, target: Box<dyn AckTarget>) {
        self.connections.lock().expect("not poisoned").insert(
            source.clone(),
            Acked {
                target,
                batches: VecDeque::new(),
                records: 0,
                stream: None,
                closed: false,
            },
        );
    }

    /// A TCP connection opens: keeps a duplicate of its socket.
    pub(crate) fn open_socket(
        &self,
        source: &Arc<str>,
        socket: BorrowedFd<'_>,
    ) -> std::io::Result<()> {
        let socket = socket.try_clone_to_owned()?;
        self.open(
            source,
            Box::new(SocketAcks {
                socket,
                due: None,
                unsent: Vec::new(),
            }),
        );
        Ok(())
    }

    /// The connection named its stream: its count goes on from the
    /// stream's durable records, which it is told at once (the ack) and
    /// which this returns.
    pub fn named(&self, source: &Arc<str>, name: String) -> Result<u64, StreamError> {
        check_name(&name)?;
        let mut connections = self.connections.lock().expect("not poisoned");
        if connections
            .values()
            .any(|c| c.stream.as_deref() == Some(name.as_str()))
        {
            return Err(StreamError::Busy(name));
        }
        let base = self
            .streams
            .lock()
            .expect("not poisoned")
            .counts
            .get(&name)
            .map_or(0, |(n, _)| *n);
        if let Some(c) = connections.get_mut(source) {
            c.records = base;
            c.stream = Some(name);
            c.target.tell(Some(base));
        }
        Ok(base)
    }

    /// The named streams' counts from a checkpoint a restart begins at.
    pub fn resume(&self, streams: &BTreeMap<String, u64>) {
        let mut held = self.streams.lock().expect("not poisoned");
        held.counts = streams.iter().map(|(k, v)| (k.clone(), (*v, 0))).collect();
    }

    /// The named streams' counts once every batch up to `through` (source
    /// → end offset) is durable: what a checkpoint records.
    pub fn streams_through(&self, through: &HashMap<Arc<str>, u64>) -> BTreeMap<String, u64> {
        let connections = self.connections.lock().expect("not poisoned");
        let mut out: BTreeMap<String, u64> = self
            .streams
            .lock()
            .expect("not poisoned")
            .counts
            .iter()
            .map(|(k, (v, _))| (k.clone(), *v))
            .collect();
        for (source, offset) in through {
            let Some(c) = connections.get(source) else {
                continue;
            };
            let Some(name) = &c.stream else {
                continue;
            };
            if let Some((_, records)) = c.batches.iter().rev().find(|(end, _)| end <= offset) {
                out.insert(name.clone(), *records);
            }
        }
        out
    }

    /// A batch of a connection is handed on (before it enters the queue).
    pub fn handed_on(&self, batch: &IngestBatch) {
        let mut connections = self.connections.lock().expect("not poisoned");
        if let Some(c) = connections.get_mut(&batch.source) {
            c.records += batch.records() as u64;
            c.batches.push_back((batch.offsets.end, c.records));
        }
    }

    /// The source reads no more from a connection (its end, an error, a
    /// stop): once its last batch is durable its target finishes (a
    /// socket closes).
    pub fn closed(&self, source: &Arc<str>) {
        let mut connections = self.connections.lock().expect("not poisoned");
        if let Some(c) = connections.get_mut(source) {
            c.closed = true;
            if c.done() {
                let c = connections.remove(source).expect("present");
                c.target.finish();
            }
        }
    }

    /// Asks the sink stage to make `source`'s batches durable now (close
    /// its open files): a Kafka partition being revoked finishes what it
    /// handed on before it goes.
    pub fn request_flush(&self, source: &Arc<str>) {
        let mut flush = self.flush.lock().expect("not poisoned");
        if !flush.contains(source) {
            flush.push(source.clone());
        }
    }

    /// The sources asked to be made durable since the last call.
    pub fn take_flush(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.flush.lock().expect("not poisoned"))
    }

    /// The source gives a connection up before its batches are durable (a
    /// Kafka partition revoked: its next owner reads them again): its
    /// target finishes and is told nothing more.
    pub fn forget(&self, source: &Arc<str>) {
        let gone = self
            .connections
            .lock()
            .expect("not poisoned")
            .remove(source);
        if let Some(c) = gone {
            c.target.finish();
        }
    }

    /// Every sink holds `source` durably through byte `offset`: writes the
    /// connection's ack.
    pub fn durable(&self, source: &Arc<str>, offset: u64) {
        let mut connections = self.connections.lock().expect("not poisoned");
        let Some(c) = connections.get_mut(source) else {
            return;
        };
        c.target.through(offset);
        let mut due = None;
        while c.batches.front().is_some_and(|(end, _)| *end <= offset) {
            let (_, records) = c.batches.pop_front().expect("checked");
            due = Some(records);
        }
        if let (Some(name), Some(records)) = (&c.stream, due) {
            let mut streams = self.streams.lock().expect("not poisoned");
            streams.tick += 1;
            let tick = streams.tick;
            let counts = &mut streams.counts;
            if counts.len() >= STREAMS_MAX && !counts.contains_key(name) {
                let oldest = counts
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| k.clone())
                    .expect("full");
                counts.remove(&oldest);
            }
            counts.insert(name.clone(), (records, tick));
        }
        let gone = !c.target.tell(due);
        if gone || c.done() {
            let c = connections.remove(source).expect("present");
            if !gone {
                c.target.finish();
            }
        }
    }

    /// A cut of `source` (its keyed state at `position`) is durable: see
    /// [`AckTarget::checkpoint`].
    pub fn checkpoint(&self, source: &Arc<str>, position: u64, snapshot: Vec<u8>) {
        let mut connections = self.connections.lock().expect("not poisoned");
        if let Some(c) = connections.get_mut(source) {
            c.target.checkpoint(position, snapshot);
        }
    }

    /// The pipeline has ended: every target still held finishes (a socket
    /// closes; what was not acknowledged is not durable).
    pub fn close_all(&self) {
        let mut connections = self.connections.lock().expect("not poisoned");
        for (_, mut c) in connections.drain() {
            c.target.tell(None);
            c.target.finish();
        }
    }
}

/// A TCP connection's acks: `ack <records>\n` lines on a duplicate of
/// its socket.
struct SocketAcks {
    socket: OwnedFd,
    /// The newest count durable and not yet written whole.
    due: Option<u64>,
    /// The rest of a line the socket did not take whole.
    unsent: Vec<u8>,
}

impl AckTarget for SocketAcks {
    fn tell(&mut self, records: Option<u64>) -> bool {
        if records.is_some() {
            self.due = records;
        }
        self.write()
    }

    fn settled(&self) -> bool {
        self.unsent.is_empty()
    }

    /// Ends the connection after the acks written: what the sender still
    /// sends is read and dropped (so closing does not reset the
    /// connection under an ack it has not read), then our side is shut.
    fn finish(self: Box<Self>) {
        let fd = self.socket.as_raw_fd();
        let mut sink = [0u8; 4096];
        // SAFETY: the fd is ours; reads go into a local buffer.
        unsafe {
            while libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) > 0 {}
            libc::shutdown(fd, libc::SHUT_WR);
        }
    }
}

impl SocketAcks {
    /// Writes what is due without blocking; false when the sender is gone.
    fn write(&mut self) -> bool {
        loop {
            if self.unsent.is_empty() {
                match self.due.take() {
                    Some(n) => self.unsent = format!("ack {n}\n").into_bytes(),
                    None => return true,
                }
            }
            // SAFETY: the fd is ours and open; the buffer is valid.
            let sent = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    self.unsent.as_ptr().cast(),
                    self.unsent.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent >= 0 {
                self.unsent.drain(..sent as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock => true,
                std::io::ErrorKind::Interrupted => continue,
                _ => false,
            };
        }
    }
}

// The TCP source's side: a connection's greeting, and its socket kept.

/// Feeds a connection's bytes to its framer, through its greeting while
/// that is undecided. False when the greeting is refused (logged): the
/// connection closes.
pub(crate) fn feed(
    greeting: &mut Option<Greeting>,
    acks: Option<&StreamAcks>,
    framer: &mut StreamFramer,
    data: &[u8],
    sink: &mut dyn BatchSink,
) -> bool {
    let Some(g) = greeting.as_mut() else {
        framer.push(data, sink);
        return true;
    };
    let refused = match g.take(data) {
        Ok(Greeted::Waiting) => return true,
        Ok(Greeted::Decided { name, rest }) => {
            *greeting = None;
            match (name, acks) {
                (Some(name), Some(acks)) => acks.named(framer.source(), name).err(),
                _ => None,
            }
            .map_or_else(
                || {
                    framer.push(&rest, sink);
                    None
                },
                Some,
            )
        }
        Err(e) => Some(e),
    };
    match refused {
        None => true,
        Some(e) => {
            tracing::warn!("tcp {}: closed: {e}", framer.source());
            false
        }
    }
}

/// A connection ended: what an undecided greeting held goes to the
/// framer, then the framer hands on its last batch.
pub(crate) fn finish(
    greeting: &mut Option<Greeting>,
    framer: &mut StreamFramer,
    sink: &mut dyn BatchSink,
) {
    if let Some(g) = greeting.take() {
        framer.push(&g.rest(), sink);
    }
    framer.finish(false, sink);
}

/// With acks, keeps a duplicate of a new connection's socket for them;
/// false (logged) when that fails, and the connection is refused.
pub(crate) fn track_acks(
    acks: Option<&StreamAcks>,
    framer: &StreamFramer,
    stream: &TcpStream,
) -> bool {
    let Some(acks) = acks else {
        return true;
    };
    match acks.open_socket(framer.source(), stream.as_fd()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "tcp {}: refused: cannot keep its socket for acks: {e}",
                framer.source()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decided greeting: the name, and the bytes for the framer.
    type Decided = (Option<String>, Vec<u8>);

    /// Feeds `bytes` split at `at` and returns what the greeting decided.
    fn greet(bytes: &[u8], at: usize) -> Result<Option<Decided>, StreamError> {
        let mut g = Greeting::default();
        let mut rest = Vec::new();
        let mut name = None;
        let mut decided = false;
        for piece in [&bytes[..at], &bytes[at..]] {
            if decided {
                rest.extend_from_slice(piece);
                continue;
            }
            if let Greeted::Decided { name: n, rest: r } = g.take(piece)? {
                decided = true;
                name = n;
                rest = r;
            }
        }
        Ok(decided.then_some((name, rest)))
    }

    #[test]
    fn a_greeting_is_read_whatever_the_split_and_other_bytes_pass_whole() {
        let named = b"stream card-feed-7\r\na,b\n1,2\n";
        let plain = b"a,b\n1,2\nstream x\n";
        let short = b"str";
        for at in 0..=named.len() {
            let (name, rest) = greet(named, at).unwrap().unwrap();
            assert_eq!(name.as_deref(), Some("card-feed-7"));
            assert_eq!(rest, b"a,b\n1,2\n");
        }
        for at in 0..=plain.len() {
            let (name, rest) = greet(plain, at).unwrap().unwrap();
            assert_eq!((name, rest.as_slice()), (None, &plain[..]));
        }
        // Undecided at the end: the bytes are the stream's.
        let mut g = Greeting::default();
        assert!(matches!(g.take(short).unwrap(), Greeted::Waiting));
        assert_eq!(g.rest(), short);
        // A bad name, an endless line.
        assert!(matches!(
            greet(b"stream a b\n", 3),
            Err(StreamError::BadName(_))
        ));
        assert!(matches!(
            greet(b"stream \n", 3),
            Err(StreamError::BadName(_))
        ));
        let long = format!("stream {}", "x".repeat(300));
        assert!(matches!(
            greet(long.as_bytes(), 100),
            Err(StreamError::TooLong)
        ));
    }
}
