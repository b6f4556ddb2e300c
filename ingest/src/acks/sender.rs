//! The TCP acks protocol's reference sender: one named stream, resumed
//! after any failure (a SIGKILLed daemon included) from the count roo
//! gives, so every record reaches the sinks exactly once. What the tests
//! and `roo-bench chaos` send with; a sender in another language does the
//! same steps (the module above has the protocol).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Records written per `write` call.
const RECORDS_PER_WRITE: usize = 4096;
/// How long a connection waits for an ack before it is given up.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// Why a resuming send gave up.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no progress for {patience:?} sending stream {stream:?} to {addr}: {last}")]
    NoProgress {
        stream: String,
        addr: SocketAddr,
        patience: Duration,
        last: String,
    },
    #[error("stream {stream:?}: roo acknowledged {acked} records but only {total} were given")]
    PastTheEnd {
        stream: String,
        acked: u64,
        total: u64,
    },
    #[error("stream {stream:?}: an ack went back from {before} to {after}")]
    AckWentBack {
        stream: String,
        before: u64,
        after: u64,
    },
}

/// A sender of one named stream of CSV (or NDJSON) records.
pub struct ResumingSender {
    addr: SocketAddr,
    stream: String,
    /// Sent first on every connection (a CSV header), after the name.
    header: Vec<u8>,
    connections: usize,
    sent: u64,
}

impl ResumingSender {
    pub fn new(addr: SocketAddr, stream: &str, header: &[u8]) -> Self {
        Self {
            addr,
            stream: stream.to_string(),
            header: header.to_vec(),
            connections: 0,
            sent: 0,
        }
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Records written so far, counting those sent again.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends `records` (each a whole line, its `\n` included) until roo
    /// acknowledges every one: on each connection, `stream NAME`, the ack
    /// that says where to start, the header, the records from there, then
    /// the write side shut and acks read to the end. Reconnects after any
    /// failure; gives up after `patience` without an ack moving.
    pub fn send_all<R: AsRef<[u8]>>(
        &mut self,
        records: &[R],
        patience: Duration,
    ) -> Result<(), SendError> {
        let total = records.len() as u64;
        let mut best = 0u64;
        let mut progress = Instant::now();
        loop {
            match self.connection(records) {
                Ok(acked) if acked == total => return Ok(()),
                Ok(acked) if acked > total => {
                    return Err(SendError::PastTheEnd {
                        stream: self.stream.clone(),
                        acked,
                        total,
                    })
                }
                Ok(acked) => {
                    if acked > best {
                        (best, progress) = (acked, Instant::now());
                    }
                }
                Err(Failed::Protocol(e)) => return Err(e),
                Err(Failed::Io(last)) => {
                    if progress.elapsed() > patience {
                        return Err(SendError::NoProgress {
                            stream: self.stream.clone(),
                            addr: self.addr,
                            patience,
                            last,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// One connection; the last count acknowledged on it.
    fn connection<R: AsRef<[u8]>>(&mut self, records: &[R]) -> Result<u64, Failed> {
        let io = |e: std::io::Error| Failed::Io(e.to_string());
        let mut socket = TcpStream::connect(self.addr).map_err(io)?;
        self.connections += 1;
        socket.set_read_timeout(Some(ACK_WAIT)).map_err(io)?;
        let mut acks = BufReader::new(socket.try_clone().map_err(io)?);
        socket
            .write_all(format!("stream {}\n", self.stream).as_bytes())
            .map_err(io)?;
        let start = read_ack(&mut acks)?.ok_or(Failed::Io("no first ack".into()))?;
        if start > records.len() as u64 {
            return Ok(start);
        }
        socket.write_all(&self.header).map_err(io)?;
        let mut line = Vec::new();
        for chunk in records[start as usize..].chunks(RECORDS_PER_WRITE) {
            line.clear();
            for r in chunk {
                line.extend_from_slice(r.as_ref());
            }
            socket.write_all(&line).map_err(io)?;
            self.sent += chunk.len() as u64;
        }
        socket.shutdown(Shutdown::Write).map_err(io)?;
        let mut last = start;
        while let Some(n) = read_ack(&mut acks)? {
            if n < last {
                return Err(Failed::Protocol(SendError::AckWentBack {
                    stream: self.stream.clone(),
                    before: last,
                    after: n,
                }));
            }
            last = n;
        }
        Ok(last)
    }
}

enum Failed {
    /// The connection failed: try again.
    Io(String),
    /// roo broke the protocol: give up.
    Protocol(SendError),
}

/// One `ack N` line; `None` once the connection has ended.
fn read_ack(reader: &mut impl BufRead) -> Result<Option<u64>, Failed> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => line
            .trim_end()
            .strip_prefix("ack ")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Failed::Io(format!("expected `ack N`, read {line:?}"))),
        Err(e) => Err(Failed::Io(e.to_string())),
    }
}
