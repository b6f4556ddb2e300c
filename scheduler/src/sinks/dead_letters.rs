//! Dead letters: records that could not be read and batches an operator
//! refused, written as NDJSON ([`DeadLetterRecord`] per line) with the same
//! publish rules as the output files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use roo_ingest::DeadLetter;

use super::files::Sealed;
use super::layout::{
    self, partial_path, publish, DeadLetterRecord, DEAD_LETTER_EXTENSION, DEAD_LETTER_PREFIX,
};
use super::SinkError;

/// One dead-letter file, created at the first letter; written to a partial
/// file and published by `finish`.
pub struct DeadLetterSink {
    path: PathBuf,
    partial: PathBuf,
    writer: Option<BufWriter<File>>,
    letters: u64,
}

impl DeadLetterSink {
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let partial = partial_path(&path).unwrap_or_else(|| path.with_extension("partial"));
        Self {
            path,
            partial,
            writer: None,
            letters: 0,
        }
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        if letters.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let file = File::create(&self.partial).map_err(|e| self.io(e))?;
            self.writer = Some(BufWriter::new(file));
        }
        let writer = self.writer.as_mut().expect("created");
        let mut result = Ok(());
        for d in letters {
            result = serde_json::to_writer(&mut *writer, &DeadLetterRecord::from(d))
                .map_err(std::io::Error::from)
                .and_then(|()| writer.write_all(b"\n"));
            if result.is_err() {
                break;
            }
        }
        result.map_err(|e| self.io(e))?;
        self.letters += letters.len() as u64;
        Ok(())
    }

    /// Publishes the file if any letter was written; returns the count.
    pub fn finish(mut self) -> Result<u64, SinkError> {
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner().map_err(|e| self.io(e.into_error()))?;
            publish(&file, &self.partial, &self.path).map_err(|e| self.io(e))?;
        }
        Ok(self.letters)
    }

    /// Makes the file durable under its hidden name, not yet published
    /// (none when no letter was written).
    pub fn seal(mut self) -> Result<Option<Sealed>, SinkError> {
        let Some(writer) = self.writer.take() else {
            return Ok(None);
        };
        let file = writer.into_inner().map_err(|e| self.io(e.into_error()))?;
        file.sync_all().map_err(|e| self.io(e))?;
        Ok(Some(Sealed {
            partial: std::mem::take(&mut self.partial),
            path: std::mem::take(&mut self.path),
            rows: self.letters,
        }))
    }
}

impl Drop for DeadLetterSink {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// A pipeline's dead letters: `DIR/dead-NNNNNN.ndjson`, a new file per
/// acknowledgement (the letters of acknowledged batches are published).
pub struct DeadLetterFiles {
    dir: PathBuf,
    current: Option<DeadLetterSink>,
    next_index: u64,
}

impl DeadLetterFiles {
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: None,
            next_index: layout::next_free_index(dir, DEAD_LETTER_PREFIX, DEAD_LETTER_EXTENSION),
        })
    }

    pub fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        if letters.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let name =
                layout::file_name(DEAD_LETTER_PREFIX, self.next_index, DEAD_LETTER_EXTENSION);
            self.next_index += 1;
            self.current = Some(DeadLetterSink::new(self.dir.join(name)));
        }
        self.current.as_mut().expect("opened").write(letters)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes the open file, if any.
    pub fn close(&mut self) -> Result<(), SinkError> {
        if let Some(c) = self.current.take() {
            c.finish()?;
        }
        Ok(())
    }

    /// A checkpoint: the open file made durable, unpublished, and the
    /// index the next file takes.
    pub fn seal_epoch(&mut self) -> Result<(Vec<Sealed>, u64), SinkError> {
        let sealed = match self.current.take() {
            Some(c) => c.seal()?.into_iter().collect(),
            None => Vec::new(),
        };
        Ok((sealed, self.next_index))
    }
}
