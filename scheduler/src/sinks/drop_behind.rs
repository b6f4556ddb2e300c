//! `DropBehind`: a long output file written through a bounded window of
//! the page cache.
//!
//! Left alone, the kernel keeps every page a sink writes, dirty until its
//! flusher threads get to it and cached after: a stream's output fills the
//! page cache (evicting what other work reads), the fsync that seals a
//! 256 MiB file flushes it all at once, and every page the sink writes is
//! a fresh one. Measured on the bench VM, writing 3 GB in 1 MiB writes:
//! 1.9–6.5 s of system time left alone, 0.7–1.0 s through this window
//! (the writeback it starts included): fresh pages cost far more than
//! pages the cache has just given back.
//!
//! So every [`WINDOW_BYTES`] written, the window just written is handed to
//! the disk (`sync_file_range(WRITE)`, which does not wait) and the window
//! before it, once on disk, is dropped from the cache
//! (`posix_fadvise(DONTNEED)`). So a file holds two windows in the cache
//! at most, plus the one write that crossed the mark (a single write
//! larger than a window widens that step's window by its length);
//! [`DropBehind::sync_all`] (the fsync that seals a file) flushes at most
//! that and then drops the whole file. Durability is
//! unchanged: only that fsync makes a file durable, as before.
//!
//! Where the file system refuses either call (a pipe, some FUSE mounts)
//! the file is written as a plain one: an error that matters (EIO)
//! returns from the fsync that seals the file, as it would have.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

/// Bytes written between two steps of the window (8 MiB): the writeback
/// started one step ago has had this many bytes' time to finish.
pub const WINDOW_BYTES: u64 = 8 << 20;

/// Ranges handed to the kernel start and end on a page boundary, so each
/// drop takes whole pages.
const PAGE_BYTES: u64 = 4096;

#[derive(Debug)]
pub struct DropBehind {
    file: File,
    /// Bytes written.
    written: u64,
    /// Writeback started for `[dropped, started)`; page aligned.
    started: u64,
    /// Dropped from the cache: `[0, dropped)`; page aligned.
    dropped: u64,
    /// False once the file system refused a call: a plain file from then on.
    enabled: bool,
}

impl DropBehind {
    pub fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
            dropped: 0,
            enabled: true,
        }
    }

    /// Bytes written so far.
    #[cfg(test)]
    fn written(&self) -> u64 {
        self.written
    }

    /// The fsync that makes the file durable; then its pages leave the
    /// cache (clean now, a reader reads them from the disk).
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()?;
        self.release_cache();
        Ok(())
    }

    /// The file, for a caller that makes it durable itself (then
    /// [`Self::release_cache`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Drops the file's clean pages from the cache: after its fsync.
    pub fn release_cache(&self) {
        if self.enabled {
            // Advice only: a refusal changes nothing that was written.
            let _ = advise_dont_need(&self.file, 0, 0);
        }
    }

    fn step(&mut self) {
        let end = self.written / PAGE_BYTES * PAGE_BYTES;
        if end <= self.started {
            return;
        }
        let fd = self.file.as_raw_fd();
        // The window before the one just written: on disk by now (or
        // waited for), then out of the cache.
        if self.started > self.dropped {
            let (from, len) = (self.dropped, self.started - self.dropped);
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            if sync_range(fd, from, len, wait).is_err()
                || advise_dont_need(&self.file, from, len).is_err()
            {
                self.enabled = false;
                return;
            }
            self.dropped = self.started;
        }
        let (from, len) = (self.started, end - self.started);
        if sync_range(fd, from, len, libc::SYNC_FILE_RANGE_WRITE).is_err() {
            self.enabled = false;
            return;
        }
        self.started = end;
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.enabled && self.written - self.started >= WINDOW_BYTES {
            self.step();
        }
    }

    /// For tests: where the cache's window stands (dropped, started) and
    /// whether the file system took the calls.
    #[cfg(test)]
    fn window(&self) -> (u64, u64, bool) {
        (self.dropped, self.started, self.enabled)
    }
}

fn sync_range(fd: i32, from: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe { libc::sync_file_range(fd, from as i64, len as i64, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn advise_dont_need(file: &File, from: u64, len: u64) -> io::Result<()> {
    // SAFETY: advice on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as i64,
            len as i64,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    // posix_fadvise returns the error rather than setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl Write for DropBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.wrote(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.file.write_vectored(bufs)?;
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Pages of `file` in the page cache, by mincore over a mapping.
    fn cached_pages(path: &std::path::Path, len: u64) -> usize {
        let file = File::open(path).expect("open");
        // SAFETY: the test's own file, not written while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
        let pages = len.div_ceil(PAGE_BYTES) as usize;
        let mut resident = vec![0u8; pages];
        // SAFETY: the mapping is `len` bytes; `resident` holds one byte per page.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                len as usize,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        resident.iter().filter(|&&r| r & 1 == 1).count()
    }

    /// A tmpfs file lives in the cache: there is nothing to drop it to.
    fn in_memory(file: &File) -> bool {
        // SAFETY: statfs is plain data (all zeros is a value); the call
        // fills it.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) }, 0);
        fs.f_type == libc::TMPFS_MAGIC
    }

    #[test]
    fn the_file_holds_every_byte_and_the_cache_two_windows_and_a_write() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.bin");
        let mut w = DropBehind::new(File::create(&path).expect("create"));
        // Writes of awkward sizes, so windows end mid-write and off pages.
        let mut expected = Vec::new();
        let mut k = 0u32;
        while (expected.len() as u64) < 5 * WINDOW_BYTES + 12345 {
            let n = 1 + (k as usize * 7919) % 300_000;
            let chunk: Vec<u8> = (0..n).map(|i| (i as u32 ^ k) as u8).collect();
            w.write_all(&chunk).expect("write");
            expected.extend_from_slice(&chunk);
            k += 1;
            let (dropped, started, enabled) = w.window();
            if !enabled {
                // A file system that refuses the calls (say, tmpfs in some
                // kernels): plain writes, still every byte.
                continue;
            }
            assert_eq!(dropped % PAGE_BYTES, 0);
            assert_eq!(started % PAGE_BYTES, 0);
            assert!(dropped <= started && started <= w.written());
            assert!(
                w.written() - dropped < 3 * WINDOW_BYTES,
                "{} bytes written, {dropped} dropped: more than the window's bound in the cache",
                w.written()
            );
        }
        let (dropped, _, enabled) = w.window();
        if enabled && !in_memory(&w.file) {
            assert!(dropped >= 3 * WINDOW_BYTES, "dropped only {dropped} bytes");
            let resident = cached_pages(&path, expected.len() as u64);
            // Pages the window dropped may come back only if read; none were.
            let bound = (expected.len() as u64 - dropped).div_ceil(PAGE_BYTES) as usize;
            assert!(
                resident <= bound,
                "{resident} pages cached, at most {bound} expected"
            );
        }
        w.sync_all().expect("sync");
        assert_eq!(w.written(), expected.len() as u64);
        drop(w);
        let mut back = Vec::new();
        File::open(&path)
            .expect("open")
            .read_to_end(&mut back)
            .expect("read");
        assert!(back == expected, "the file differs from what was written");
    }
}
