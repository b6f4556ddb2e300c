//! Sequential file reads through io_uring with registered buffers
//! (READ_FIXED), or plain reads when io_uring is unavailable.
//!
//! `queue_depth` buffers of `buffer_bytes` are registered once; reads for
//! the next buffers are in flight while the caller parses the current one.
//! Registered buffers are pinned memory and count against RLIMIT_MEMLOCK,
//! so the plan shrinks to fit the limit, and falls back to plain reads
//! (logged once, with the reason) if even the smallest plan is refused.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::IngestError;

/// Whether to try io_uring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoUringMode {
    /// io_uring when the kernel and limits allow, else plain reads.
    #[default]
    Auto,
    /// Plain reads only.
    Off,
}

/// How files are read.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    pub io_uring: IoUringMode,
    /// Reads in flight (and buffers registered).
    pub queue_depth: u32,
    /// Bytes per read.
    pub buffer_bytes: usize,
    /// Pinned-memory budget for registered buffers; `None`: the process's
    /// RLIMIT_MEMLOCK soft limit.
    pub memlock_bytes: Option<u64>,
}

pub const QUEUE_DEPTH_DEFAULT: u32 = 4;
pub const BUFFER_BYTES_DEFAULT: usize = 1 << 20;
const QUEUE_DEPTH_MIN: u32 = 2;
const QUEUE_DEPTH_MAX: u32 = 64;
const BUFFER_BYTES_MIN: usize = 64 << 10;
const BUFFER_BYTES_MAX: usize = 64 << 20;

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            io_uring: IoUringMode::Auto,
            queue_depth: QUEUE_DEPTH_DEFAULT,
            buffer_bytes: BUFFER_BYTES_DEFAULT,
            memlock_bytes: None,
        }
    }
}

/// The path a read took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPath {
    IoUring {
        queue_depth: u32,
        buffer_bytes: usize,
    },
    Plain {
        reason: String,
    },
}

impl std::fmt::Display for ReadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadPath::IoUring {
                queue_depth,
                buffer_bytes,
            } => write!(
                f,
                "io_uring READ_FIXED, {queue_depth} registered buffers of {} KiB",
                buffer_bytes >> 10
            ),
            ReadPath::Plain { reason } => write!(f, "plain reads ({reason})"),
        }
    }
}

/// Logs the read path the first time each kind is used in this process.
fn log_once(path: &ReadPath) {
    static LOGGED: AtomicU8 = AtomicU8::new(0);
    let bit = match path {
        ReadPath::IoUring { .. } => 1,
        ReadPath::Plain { .. } => 2,
    };
    if LOGGED.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        match path {
            ReadPath::IoUring { .. } => tracing::info!("reading files with {path}"),
            ReadPath::Plain { .. } => tracing::warn!("reading files with {path}"),
        }
    }
}

/// The process's RLIMIT_MEMLOCK soft limit; `None` when unlimited.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(limit.rlim_cur)
    }
}

/// Shrinks (queue depth, buffer size) until their product fits half the
/// memlock budget (the rest is left to other rings); `None` if even the
/// smallest plan does not fit.
pub(crate) fn fit_to_memlock(
    queue_depth: u32,
    buffer_bytes: usize,
    budget: Option<u64>,
) -> Option<(u32, usize)> {
    let mut depth = queue_depth.clamp(QUEUE_DEPTH_MIN, QUEUE_DEPTH_MAX);
    let mut bytes = buffer_bytes.clamp(BUFFER_BYTES_MIN, BUFFER_BYTES_MAX);
    let Some(budget) = budget else {
        return Some((depth, bytes));
    };
    let allowed = budget / 2;
    while depth as u64 * bytes as u64 > allowed {
        if depth > QUEUE_DEPTH_MIN && (depth >= 4 || bytes <= BUFFER_BYTES_MIN) {
            depth /= 2;
        } else if bytes > BUFFER_BYTES_MIN {
            bytes /= 2;
        } else {
            return None;
        }
    }
    Some((depth.max(QUEUE_DEPTH_MIN), bytes))
}

/// Whether this process may use io_uring with a registered buffer (the
/// kernel may lack it, a seccomp profile or sysctl may refuse it); the
/// error says why not.
pub fn io_uring_probe() -> Result<(), String> {
    UringReader::new(QUEUE_DEPTH_MIN, 4096)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Reads `file` from byte `start` to its end, in order, handing each piece
/// to `consume` (which returns `false` to stop early).
pub fn read_file(
    file: &File,
    shown: &str,
    start: u64,
    options: &ReadOptions,
    consume: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<ReadPath, IngestError> {
    let io = |error| IngestError::Io {
        path: shown.to_string(),
        error,
    };
    let mut plain = |reason: String| -> Result<ReadPath, IngestError> {
        let path = ReadPath::Plain { reason };
        log_once(&path);
        read_plain(
            file,
            start,
            options
                .buffer_bytes
                .clamp(BUFFER_BYTES_MIN, BUFFER_BYTES_MAX),
            consume,
        )
        .map_err(io)?;
        Ok(path)
    };
    if options.io_uring == IoUringMode::Off {
        return plain("io_uring is off in the configuration".into());
    }
    let budget = options.memlock_bytes.or_else(memlock_limit);
    let Some((depth, bytes)) = fit_to_memlock(options.queue_depth, options.buffer_bytes, budget)
    else {
        return plain(format!(
            "the memlock limit of {} bytes cannot hold {QUEUE_DEPTH_MIN} registered buffers of {} KiB",
            budget.unwrap_or(0),
            BUFFER_BYTES_MIN >> 10
        ));
    };
    let mut reader = match UringReader::new(depth, bytes) {
        Ok(r) => r,
        Err(e) => return plain(format!("io_uring setup failed: {e}")),
    };
    let path = ReadPath::IoUring {
        queue_depth: depth,
        buffer_bytes: bytes,
    };
    log_once(&path);
    reader.read(file, start, consume).map_err(io)?;
    Ok(path)
}

fn read_plain(
    file: &File,
    start: u64,
    buffer_bytes: usize,
    consume: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; buffer_bytes];
    let mut offset = start;
    loop {
        let n = match file.read_at(&mut buffer, offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        offset += n as u64;
        if !consume(&buffer[..n]) {
            return Ok(());
        }
    }
}

/// A ring with `depth` registered buffers.
struct UringReader {
    ring: io_uring::IoUring,
    /// One allocation, `depth` buffers of `bytes`; registered, so it must
    /// not move or be freed while the ring lives (it is dropped after).
    memory: Vec<u8>,
    depth: u32,
    bytes: usize,
}

struct Slot {
    index: u16,
    offset: u64,
    len: usize,
    /// Bytes of this slot's range already read (short reads resubmit).
    filled: usize,
    result: Option<i32>,
}

impl UringReader {
    fn new(depth: u32, bytes: usize) -> std::io::Result<Self> {
        let ring = io_uring::IoUring::new(depth.next_power_of_two() * 2)?;
        let mut memory = vec![0u8; depth as usize * bytes];
        let iovecs: Vec<libc::iovec> = memory
            .chunks_mut(bytes)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: the iovecs point into `memory`, which lives in the same
        // struct as the ring and is dropped after it (field order), and is
        // never reallocated.
        unsafe { ring.submitter().register_buffers(&iovecs)? };
        Ok(Self {
            ring,
            memory,
            depth,
            bytes,
        })
    }

    fn submit_slot(&mut self, fd: i32, slot: &Slot) -> std::io::Result<()> {
        let start = slot.index as usize * self.bytes + slot.filled;
        // SAFETY: the pointer and length lie inside registered buffer
        // `slot.index`, which no one reads until this read completes.
        let ptr = unsafe { self.memory.as_mut_ptr().add(start) };
        let entry = io_uring::opcode::ReadFixed::new(
            io_uring::types::Fd(fd),
            ptr,
            (slot.len - slot.filled) as u32,
            slot.index,
        )
        .offset(slot.offset + slot.filled as u64)
        .build()
        .user_data(slot.index as u64);
        // SAFETY: the entry's buffer stays valid until its completion is
        // reaped (`read` waits for every in-flight read before returning).
        unsafe {
            self.ring
                .submission()
                .push(&entry)
                .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
        }
        Ok(())
    }

    fn read(
        &mut self,
        file: &File,
        start: u64,
        consume: &mut dyn FnMut(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        let fd = file.as_raw_fd();
        let size = file.metadata()?.len();
        let mut next = start;
        let mut in_flight: VecDeque<Slot> = VecDeque::new();
        for index in 0..self.depth as u16 {
            if next >= size {
                break;
            }
            let slot = Slot {
                index,
                offset: next,
                len: self.bytes,
                filled: 0,
                result: None,
            };
            next += self.bytes as u64;
            self.submit_slot(fd, &slot)?;
            in_flight.push_back(slot);
        }
        let outcome = self.drive(fd, size, &mut next, &mut in_flight, consume);
        // Wait for every read still in flight: its buffer is ours to free.
        while in_flight.iter().any(|s| s.result.is_none()) {
            self.ring.submit_and_wait(1)?;
            self.reap(&mut in_flight);
        }
        outcome
    }

    fn reap(&mut self, in_flight: &mut VecDeque<Slot>) {
        for cqe in self.ring.completion() {
            if let Some(slot) = in_flight
                .iter_mut()
                .find(|s| s.index as u64 == cqe.user_data())
            {
                slot.result = Some(cqe.result());
            }
        }
    }

    fn drive(
        &mut self,
        fd: i32,
        size: u64,
        next: &mut u64,
        in_flight: &mut VecDeque<Slot>,
        consume: &mut dyn FnMut(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        while let Some(head) = in_flight.front() {
            if head.result.is_none() {
                self.ring.submit_and_wait(1)?;
                self.reap(in_flight);
                continue;
            }
            let mut slot = in_flight.pop_front().expect("head exists");
            let result = slot.result.take().expect("checked");
            if result < 0 {
                let e = std::io::Error::from_raw_os_error(-result);
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    self.submit_slot(fd, &slot)?;
                    in_flight.push_front(slot);
                    continue;
                }
                return Err(e);
            }
            let n = result as usize;
            let begin = slot.index as usize * self.bytes;
            if n == 0 {
                // End of file (it may have shrunk); later reads see it too.
                if slot.filled > 0 {
                    consume(&self.memory[begin..begin + slot.filled]);
                }
                return Ok(());
            }
            slot.filled += n;
            if slot.filled < slot.len && slot.offset + (slot.filled as u64) < size {
                // A short read: read the rest of this range before handing
                // it on, so pieces stay in order.
                self.submit_slot(fd, &slot)?;
                in_flight.push_front(slot);
                continue;
            }
            if !consume(&self.memory[begin..begin + slot.filled]) {
                return Ok(());
            }
            if *next < size {
                let reuse = Slot {
                    index: slot.index,
                    offset: *next,
                    len: self.bytes,
                    filled: 0,
                    result: None,
                };
                *next += self.bytes as u64;
                self.submit_slot(fd, &reuse)?;
                in_flight.push_back(reuse);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_shrink_to_the_memlock_budget() {
        assert_eq!(fit_to_memlock(4, 1 << 20, None), Some((4, 1 << 20)));
        assert_eq!(
            fit_to_memlock(4, 1 << 20, Some(8 << 20)),
            Some((4, 1 << 20))
        );
        assert_eq!(
            fit_to_memlock(16, 1 << 20, Some(8 << 20)),
            Some((4, 1 << 20))
        );
        assert_eq!(
            fit_to_memlock(4, 1 << 20, Some(1 << 20)),
            Some((2, 256 << 10))
        );
        assert_eq!(
            fit_to_memlock(4, 1 << 20, Some(256 << 10)),
            Some((2, 64 << 10))
        );
        assert_eq!(fit_to_memlock(4, 1 << 20, Some(64 << 10)), None);
    }
}
