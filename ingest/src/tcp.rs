//! The TCP source: many connections, each its own stream of records.
//!
//! With io_uring: one multishot accept on the listener, one multishot recv
//! per connection on a ring of provided buffers (the kernel picks a buffer
//! per receive; roo parses it in place and hands it back). When the ring
//! runs dry the recv ends with ENOBUFS and is re-armed once buffers are
//! back. Without io_uring: a thread per connection with plain reads. Both
//! paths feed the same [`Framer`]s, so they give identical batches.
//!
//! Backpressure: the sink blocks when downstream is full; while it does, no
//! buffer is handed back and no socket is read, so the kernel's receive
//! windows fill and TCP flow control slows the senders. Memory is bounded
//! by the buffer ring, the connection limit and each framer's batch.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;

use crate::acks::{feed, finish, track_acks, Greeting, StreamAcks};
use crate::framer::{BatchLimits, BatchSink, StreamFormat};
use crate::parallel::{ParsePool, StreamFramer};
use crate::read::IoUringMode;
use crate::IngestBatch;
use crate::IngestError;

/// A TCP source's settings.
#[derive(Clone, Debug)]
pub struct TcpSourceConfig {
    pub listen: SocketAddr,
    pub format: StreamFormat,
    /// Columns of the records (required for CSV, NDJSON and raw; checked
    /// against incoming batches for Arrow IPC).
    pub schema: Option<SchemaRef>,
    pub limits: BatchLimits,
    /// Open connections at most; more are closed on arrival (and counted).
    pub connections_max: usize,
    pub io_uring: IoUringMode,
    /// Bytes per provided receive buffer.
    pub recv_buffer_bytes: usize,
    /// Provided receive buffers (a power of two, at most 32768).
    pub recv_buffers: u16,
    /// Threads that parse a connection's CSV or NDJSON in pieces (see
    /// [`crate::StreamFramer`]); none: each connection is parsed on the
    /// thread that receives it.
    pub parse_pool: Option<ParsePool>,
    /// Write `ack <records>\n` back on each connection as its records
    /// become durable (see [`StreamAcks`]); the caller reports durability.
    pub acks: Option<Arc<StreamAcks>>,
}

impl TcpSourceConfig {
    pub fn new(listen: SocketAddr, format: StreamFormat, schema: Option<SchemaRef>) -> Self {
        Self {
            listen,
            format,
            schema,
            limits: BatchLimits::default(),
            connections_max: 1024,
            io_uring: IoUringMode::Auto,
            recv_buffer_bytes: 64 << 10,
            recv_buffers: 256,
            parse_pool: None,
            acks: None,
        }
    }
}

/// What a TCP source did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpReport {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub bytes: u64,
    /// Times a multishot recv ran out of provided buffers and was re-armed.
    pub recv_rearms_enobufs: u64,
}

/// A running TCP source; [`TcpSource::stop`] ends it.
pub struct TcpSource {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<TcpReport, IngestError>>>,
    uses_io_uring: bool,
}

type SharedSink = Box<dyn BatchSink + Send>;

/// How often loops look at the stop flag when idle.
const STOP_POLL: Duration = Duration::from_millis(20);

impl TcpSource {
    /// Binds `config.listen` and starts accepting; batches go to `sink`
    /// from the source's own thread(s).
    pub fn start(config: TcpSourceConfig, sink: SharedSink) -> Result<Self, IngestError> {
        let shown = format!("tcp://{}", config.listen);
        let io = |error| IngestError::Io {
            path: shown.clone(),
            error,
        };
        if !config.recv_buffers.is_power_of_two() || config.recv_buffers > 32768 {
            return Err(IngestError::Format {
                path: shown,
                message: format!(
                    "recv_buffers {}: expected a power of two up to 32768",
                    config.recv_buffers
                ),
            });
        }
        // Fail now, not on the first connection, if the format or schema is wrong.
        crate::Framer::new(
            Arc::from(shown.as_str()),
            &config.format,
            config.schema.clone(),
            config.limits,
        )?;
        let listener = bind(config.listen, BIND_WAIT).map_err(io)?;
        let local_addr = listener.local_addr().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        // With acks, each batch's records are counted before it is handed on.
        let sink: SharedSink = match config.acks.clone() {
            Some(acks) => {
                let mut inner = sink;
                Box::new(move |b: IngestBatch| {
                    acks.handed_on(&b);
                    inner.batch(b)
                })
            }
            None => sink,
        };
        let uring = match config.io_uring {
            IoUringMode::Off => Err("io_uring is off in the configuration".to_string()),
            IoUringMode::Auto => {
                UringTcp::new(&config).map_err(|e| format!("io_uring setup failed: {e}"))
            }
        };
        let uses_io_uring = uring.is_ok();
        let stop_flag = stop.clone();
        let thread = match uring {
            Ok(mut u) => {
                tracing::info!(
                    "tcp {local_addr}: io_uring multishot accept and recv, {} provided buffers of {} KiB",
                    config.recv_buffers,
                    config.recv_buffer_bytes >> 10
                );
                std::thread::Builder::new()
                    .name("roo-tcp".into())
                    .spawn(move || u.run(listener, local_addr, config, sink, stop_flag))
            }
            Err(reason) => {
                tracing::warn!("tcp {local_addr}: plain threads ({reason})");
                std::thread::Builder::new()
                    .name("roo-tcp-accept".into())
                    .spawn(move || run_plain(listener, local_addr, config, sink, stop_flag))
            }
        }
        .map_err(io)?;
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
            uses_io_uring,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn uses_io_uring(&self) -> bool {
        self.uses_io_uring
    }

    /// Stops accepting and reading, hands on every connection's open batch
    /// (a record cut by the stop is not acknowledged, not a dead letter),
    /// and returns the source's counts.
    pub fn stop(mut self) -> Result<TcpReport, IngestError> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("the tcp thread does not panic")
    }
}

impl Drop for TcpSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn source_name(local: SocketAddr, id: u64, peer: Option<SocketAddr>) -> Arc<str> {
    match peer {
        Some(p) => Arc::from(format!("tcp://{local}#{id} (from {p})")),
        None => Arc::from(format!("tcp://{local}#{id}")),
    }
}

const ACCEPT: u64 = u64::MAX;
const BUFFER_GROUP: u16 = 0;

struct Connection {
    fd: i32,
    generation: u32,
    framer: StreamFramer,
    /// With acks, until the first line says whether it names a stream.
    greeting: Option<Greeting>,
}

/// The provided-buffer ring: `entries` ring slots and buffers, page
/// aligned, registered with the kernel as buffer group 0.
struct BufferRing {
    ring: *mut io_uring::types::BufRingEntry,
    ring_layout: std::alloc::Layout,
    buffers: Vec<u8>,
    buffer_bytes: usize,
    entries: u16,
    tail: u16,
}

// SAFETY: the ring memory is owned by this struct and used by one thread.
unsafe impl Send for BufferRing {}

impl BufferRing {
    fn new(entries: u16, buffer_bytes: usize) -> std::io::Result<Self> {
        let ring_layout = std::alloc::Layout::from_size_align(
            entries as usize * std::mem::size_of::<io_uring::types::BufRingEntry>(),
            4096,
        )
        .map_err(std::io::Error::other)?;
        // SAFETY: the layout has a non-zero size (entries ≥ 1).
        let ring =
            unsafe { std::alloc::alloc_zeroed(ring_layout) } as *mut io_uring::types::BufRingEntry;
        if ring.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        let mut this = Self {
            ring,
            ring_layout,
            buffers: vec![0u8; entries as usize * buffer_bytes],
            buffer_bytes,
            entries,
            tail: 0,
        };
        for bid in 0..entries {
            this.provide(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Puts buffer `bid` back in the ring (visible after [`publish`]).
    fn provide(&mut self, bid: u16) {
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot < entries`, inside the ring allocation.
        let entry = unsafe { &mut *self.ring.add(slot) };
        entry.set_addr(self.buffers[bid as usize * self.buffer_bytes..].as_ptr() as u64);
        entry.set_len(self.buffer_bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's `resv`, per the kernel
        // ABI; it is a u16 the kernel reads, so it is stored atomically.
        unsafe {
            let tail = io_uring::types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.buffer_bytes;
        &self.buffers[start..start + len]
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the io_uring that
        // used it is dropped before (it is declared first in UringTcp).
        unsafe { std::alloc::dealloc(self.ring as *mut u8, self.ring_layout) };
    }
}

struct UringTcp {
    ring: io_uring::IoUring,
    buffers: BufferRing,
}

impl UringTcp {
    fn new(config: &TcpSourceConfig) -> std::io::Result<Self> {
        let ring = io_uring::IoUring::builder().build(1024)?;
        let buffers = BufferRing::new(config.recv_buffers, config.recv_buffer_bytes)?;
        // SAFETY: the ring memory lives in `buffers`, dropped after `ring`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.ring as u64,
                config.recv_buffers,
                BUFFER_GROUP,
                0,
            )?;
        }
        Ok(Self { ring, buffers })
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: entries reference only fds (no user memory besides the
            // registered buffer ring).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_recv(&mut self, slot: usize, fd: i32, generation: u32) -> std::io::Result<()> {
        let entry = io_uring::opcode::RecvMulti::new(io_uring::types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(((generation as u64) << 32) | slot as u64);
        self.push(entry)
    }

    fn run(
        &mut self,
        listener: TcpListener,
        local: SocketAddr,
        config: TcpSourceConfig,
        mut sink: SharedSink,
        stop: Arc<AtomicBool>,
    ) -> Result<TcpReport, IngestError> {
        let shown = format!("tcp://{local}");
        let io = |error| IngestError::Io {
            path: shown.clone(),
            error,
        };
        let mut report = TcpReport::default();
        let mut connections: Vec<Option<Connection>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut generation: u32 = 0;
        let mut next_id: u64 = 0;
        let accept = io_uring::opcode::AcceptMulti::new(io_uring::types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT);
        self.push(accept.clone()).map_err(io)?;
        let mut sink_stopped = false;
        let mut completions = Vec::new();
        while !stop.load(Ordering::Acquire) && !sink_stopped {
            // Sleep until a completion, the next linger deadline, or a stop poll.
            let now = Instant::now();
            let mut due = now + STOP_POLL;
            for c in connections.iter_mut().flatten() {
                if let Some(d) = c.framer.poll(now, &mut *sink) {
                    due = due.min(d);
                }
            }
            let wait = due.saturating_duration_since(now);
            let ts = io_uring::types::Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            let args = io_uring::types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => return Err(io(e)),
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                if user_data == ACCEPT {
                    if result >= 0 {
                        // SAFETY: a successful accept returns a new fd we own.
                        let stream = unsafe { TcpStream::from_raw_fd(result) };
                        let live = connections.iter().flatten().count();
                        if live >= config.connections_max {
                            report.connections_refused += 1;
                            tracing::warn!(
                                "tcp {local}: refused a connection: {live} open, the limit"
                            );
                            drop(stream);
                        } else {
                            let _ = stream.set_nodelay(true);
                            let peer = stream.peer_addr().ok();
                            let framer = StreamFramer::new(
                                source_name(local, next_id, peer),
                                &config.format,
                                config.schema.clone(),
                                config.limits,
                                config.parse_pool.as_ref(),
                            )?;
                            next_id += 1;
                            if !track_acks(config.acks.as_deref(), &framer, &stream) {
                                report.connections_refused += 1;
                                continue;
                            }
                            report.connections_accepted += 1;
                            generation = generation.wrapping_add(1);
                            let slot = free.pop().unwrap_or_else(|| {
                                connections.push(None);
                                connections.len() - 1
                            });
                            let c = Connection {
                                fd: stream.into_raw_fd(),
                                generation,
                                framer,
                                greeting: config.acks.is_some().then(Greeting::default),
                            };
                            self.arm_recv(slot, c.fd, c.generation).map_err(io)?;
                            connections[slot] = Some(c);
                        }
                    } else if result != -libc::EINTR {
                        tracing::warn!(
                            "tcp {local}: accept failed: {}",
                            std::io::Error::from_raw_os_error(-result)
                        );
                    }
                    if !io_uring::cqueue::more(flags) {
                        self.push(accept.clone()).map_err(io)?;
                    }
                    continue;
                }
                let slot = (user_data & 0xffff_ffff) as usize;
                let gen = (user_data >> 32) as u32;
                let bid = io_uring::cqueue::buffer_select(flags);
                let live = connections
                    .get(slot)
                    .and_then(|c| c.as_ref())
                    .is_some_and(|c| c.generation == gen);
                if !live {
                    if let Some(bid) = bid {
                        self.buffers.provide(bid);
                    }
                    continue;
                }
                let c = connections[slot].as_mut().expect("live");
                let mut close = false;
                if result > 0 {
                    let bid = bid.expect("a recv with data names its buffer");
                    report.bytes += result as u64;
                    let fed = feed(
                        &mut c.greeting,
                        config.acks.as_deref(),
                        &mut c.framer,
                        self.buffers.buffer(bid, result as usize),
                        &mut *sink,
                    );
                    self.buffers.provide(bid);
                    sink_stopped |= c.framer.stopped();
                    close = !fed || c.framer.failed();
                } else if result == 0 {
                    finish(&mut c.greeting, &mut c.framer, &mut *sink);
                    close = true;
                } else if result == -libc::ENOBUFS {
                    report.recv_rearms_enobufs += 1;
                } else {
                    let e = std::io::Error::from_raw_os_error(-result);
                    tracing::info!("tcp {}: closed: {e}", c.framer.source());
                    finish(&mut c.greeting, &mut c.framer, &mut *sink);
                    close = true;
                }
                if close {
                    let c = connections[slot].take().expect("live");
                    close_connection(c, config.acks.as_deref());
                    free.push(slot);
                } else if !io_uring::cqueue::more(flags) {
                    let (fd, generation) = (c.fd, c.generation);
                    self.arm_recv(slot, fd, generation).map_err(io)?;
                }
            }
            self.buffers.publish();
        }
        // Stop: hand on what every connection has parsed, then close it.
        for c in connections.iter_mut().filter_map(Option::take) {
            let mut c = c;
            c.framer.flush(&mut *sink);
            close_connection(c, config.acks.as_deref());
        }
        Ok(report)
    }
}

/// How long a listener waits for its address while it is in use.
const BIND_WAIT: Duration = Duration::from_secs(10);

/// Binds `addr`, waiting up to `wait` while it is in use. A process killed
/// with SIGKILL leaves its listening socket held by its io_uring until the
/// kernel has torn the ring down (a moment after the process is reaped),
/// so a restart at once can find the address still taken.
fn bind(addr: std::net::SocketAddr, wait: Duration) -> std::io::Result<TcpListener> {
    let started = Instant::now();
    let mut said = false;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < wait => {
                if !said {
                    tracing::info!(
                        "tcp {addr}: the address is in use; waiting up to {wait:?} for it"
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Closes a connection's fd. Without acks the socket is shut both ways;
/// with acks only its reading side, and [`StreamAcks`] keeps the socket for
/// the acks still to come.
fn close_connection(c: Connection, acks: Option<&StreamAcks>) {
    let how = if acks.is_some() {
        libc::SHUT_RD
    } else {
        libc::SHUT_RDWR
    };
    // SAFETY: the fd is ours; shutdown ends the armed recv.
    unsafe {
        libc::shutdown(c.fd, how);
        libc::close(c.fd);
    }
    if let Some(acks) = acks {
        acks.closed(c.framer.source());
    }
}

/// Without io_uring: an accepting thread and a thread per connection.
fn run_plain(
    listener: TcpListener,
    local: SocketAddr,
    config: TcpSourceConfig,
    sink: SharedSink,
    stop: Arc<AtomicBool>,
) -> Result<TcpReport, IngestError> {
    let shown = format!("tcp://{local}");
    let io = |error| IngestError::Io {
        path: shown.clone(),
        error,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let sink = Arc::new(Mutex::new(sink));
    let report = Arc::new(Mutex::new(TcpReport::default()));
    let mut threads: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut next_id = 0u64;
    while !stop.load(Ordering::Acquire) {
        threads.retain(|_, t| !t.is_finished());
        match listener.accept() {
            Ok((stream, peer)) => {
                if threads.len() >= config.connections_max {
                    report.lock().expect("not poisoned").connections_refused += 1;
                    tracing::warn!(
                        "tcp {local}: refused a connection: {} open, the limit",
                        threads.len()
                    );
                    continue;
                }
                let framer = StreamFramer::new(
                    source_name(local, next_id, Some(peer)),
                    &config.format,
                    config.schema.clone(),
                    config.limits,
                    config.parse_pool.as_ref(),
                )?;
                next_id += 1;
                if !track_acks(config.acks.as_deref(), &framer, &stream) {
                    report.lock().expect("not poisoned").connections_refused += 1;
                    continue;
                }
                report.lock().expect("not poisoned").connections_accepted += 1;
                let (sink, report, stop) = (sink.clone(), report.clone(), stop.clone());
                let limits = config.limits;
                let buffer_bytes = config.recv_buffer_bytes;
                let acks = config.acks.clone();
                let t = std::thread::Builder::new()
                    .name(format!("roo-tcp-{next_id}"))
                    .spawn(move || {
                        let source = framer.source().clone();
                        let plain = Plain {
                            greeting: acks.is_some().then(Greeting::default),
                            acks: acks.as_deref(),
                            framer,
                            limits,
                            buffer_bytes,
                        };
                        plain.serve(stream, sink, report, stop);
                        if let Some(acks) = &acks {
                            acks.closed(&source);
                        }
                    })
                    .map_err(io)?;
                threads.insert(next_id, t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => tracing::warn!("tcp {local}: accept failed: {e}"),
        }
    }
    for (_, t) in threads {
        let _ = t.join();
    }
    let report = report.lock().expect("not poisoned").clone();
    Ok(report)
}

/// One connection without io_uring: its thread's state.
struct Plain<'a> {
    greeting: Option<Greeting>,
    acks: Option<&'a StreamAcks>,
    framer: StreamFramer,
    limits: BatchLimits,
    buffer_bytes: usize,
}

impl Plain<'_> {
    fn serve(
        mut self,
        mut stream: TcpStream,
        sink: Arc<Mutex<SharedSink>>,
        report: Arc<Mutex<TcpReport>>,
        stop: Arc<AtomicBool>,
    ) {
        let _ = stream.set_nodelay(true);
        let mut buffer = vec![0u8; self.buffer_bytes];
        let tick = self
            .limits
            .linger
            .clamp(Duration::from_millis(1), STOP_POLL);
        let _ = stream.set_read_timeout(Some(tick));
        let sink_guard = |f: &mut dyn FnMut(&mut dyn BatchSink)| {
            let mut s = sink.lock().expect("not poisoned");
            f(&mut **s)
        };
        let Self {
            greeting,
            acks,
            framer,
            ..
        } = &mut self;
        loop {
            if stop.load(Ordering::Acquire) {
                sink_guard(&mut |s| framer.flush(s));
                return;
            }
            match stream.read(&mut buffer) {
                Ok(0) => {
                    sink_guard(&mut |s| finish(greeting, framer, s));
                    return;
                }
                Ok(n) => {
                    report.lock().expect("not poisoned").bytes += n as u64;
                    let mut fed = true;
                    sink_guard(&mut |s| fed = feed(greeting, *acks, framer, &buffer[..n], s));
                    if !fed || framer.failed() || framer.stopped() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::info!("tcp {}: closed: {e}", framer.source());
                    sink_guard(&mut |s| finish(greeting, framer, s));
                    return;
                }
            }
            let now = Instant::now();
            sink_guard(&mut |s| {
                framer.poll(now, s);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_waits_for_its_address_while_it_is_in_use() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let refused = bind(addr, Duration::ZERO).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
        // Freed while the second waits: it gets the address.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let freer = std::thread::spawn(move || {
            rx.recv().unwrap();
            drop(held);
        });
        let waiting = std::thread::spawn(move || bind(addr, Duration::from_secs(30)));
        tx.send(()).unwrap();
        freer.join().unwrap();
        let got = waiting.join().unwrap().unwrap();
        assert_eq!(got.local_addr().unwrap(), addr);
    }
}
