//! Arrow IPC files through memmap2, zero-copy: every array buffer of every
//! batch points into the mapping (a test checks the addresses). Both the
//! file format (footer with block index) and the stream format are read.
//!
//! Hostile files are refused with an error, never a panic: block offsets
//! and lengths are checked against the mapping before any slice is taken,
//! and the flatbuffers are verified by arrow-ipc.

use std::fs::File;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileDecoder, StreamDecoder};
use arrow_ipc::Block;
use arrow_schema::SchemaRef;

use crate::guard::guarded;

const FILE_MAGIC: &[u8; 6] = b"ARROW1";

/// Checks that a record batch message's buffers lie inside its body.
fn check_buffers(data: &[u8], block: &Block) -> Result<(), String> {
    let meta_len = block.metaDataLength() as usize;
    let meta = &data[..meta_len];
    let fb = match meta {
        [0xff, 0xff, 0xff, 0xff, _, _, _, _, rest @ ..] => rest,
        [_, _, _, _, rest @ ..] => rest,
        _ => return Err("a block too short for its message".into()),
    };
    let message = arrow_ipc::root_as_message(fb).map_err(|e| format!("a corrupt message: {e}"))?;
    let body = block.bodyLength();
    if let Some(batch) = message.header_as_record_batch() {
        for b in batch.buffers().iter().flatten() {
            if b.offset() < 0
                || b.length() < 0
                || b.offset()
                    .checked_add(b.length())
                    .is_none_or(|end| end > body)
            {
                return Err(format!(
                    "a buffer at {} of {} bytes outside its message body of {body} bytes",
                    b.offset(),
                    b.length()
                ));
            }
        }
    }
    Ok(())
}

/// A mapped IPC file or stream and the batches it holds.
pub(crate) enum MappedIpc {
    File {
        buffer: Buffer,
        decoder: Box<FileDecoder>,
        blocks: Vec<Block>,
        schema: SchemaRef,
    },
    Stream {
        buffer: Buffer,
        decoder: StreamDecoder,
        schema: SchemaRef,
        /// A batch decoded while looking for the schema.
        first: Option<RecordBatch>,
    },
}

/// Maps `file` read-only into a [`Buffer`] that owns the mapping.
pub(crate) fn map(file: &File) -> Result<Buffer, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err("the file is empty; expected an Arrow IPC file or stream".into());
    }
    // SAFETY: the mapping is read-only. A file truncated by another process
    // while mapped raises SIGBUS on access, as with every mmap reader; roo
    // documents that input files must not be truncated while read.
    let mmap = unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("mapping the file: {e}"))?;
    let ptr = NonNull::new(mmap.as_ptr() as *mut u8).expect("a mapping is never null");
    let len = mmap.len();
    // SAFETY: `ptr..ptr+len` is the mapping, kept alive by the Arc'd owner
    // for as long as any Buffer sliced from this one lives.
    Ok(unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(mmap)) })
}

impl MappedIpc {
    pub fn open(file: &File) -> Result<Self, String> {
        let buffer = map(file)?;
        let bytes = buffer.as_slice();
        if bytes.len() >= 8 && &bytes[..6] == FILE_MAGIC {
            Self::open_file(buffer)
        } else {
            Self::open_stream(buffer)
        }
    }

    fn open_file(buffer: Buffer) -> Result<Self, String> {
        let bytes = buffer.as_slice();
        if bytes.len() < 6 + 2 + 10 {
            return Err("an Arrow IPC file too short to hold a footer".into());
        }
        let trailer: [u8; 10] = bytes[bytes.len() - 10..].try_into().expect("10 bytes");
        let footer_len =
            arrow_ipc::reader::read_footer_length(trailer).map_err(|e| e.to_string())?;
        let footer_end = bytes.len() - 10;
        if footer_len > footer_end - 8 {
            return Err(format!(
                "the footer claims {footer_len} bytes; the file holds {}",
                bytes.len()
            ));
        }
        let footer = arrow_ipc::root_as_footer(&bytes[footer_end - footer_len..footer_end])
            .map_err(|e| format!("a corrupt footer: {e}"))?;
        let schema = footer.schema().ok_or("the footer holds no schema")?;
        let schema =
            Arc::new(arrow_ipc::convert::try_fb_to_schema(schema).map_err(|e| e.to_string())?);
        let mut decoder =
            FileDecoder::new(schema.clone(), footer.version()).with_require_alignment(true);
        let check = |block: &Block| -> Result<Buffer, String> {
            let offset = usize::try_from(block.offset()).ok();
            let len = usize::try_from(block.bodyLength())
                .ok()
                .zip(usize::try_from(block.metaDataLength()).ok())
                .and_then(|(b, m)| b.checked_add(m));
            match (offset, len) {
                (Some(o), Some(l)) if o.checked_add(l).is_some_and(|end| end <= footer_end) => {
                    Ok(buffer.slice_with_length(o, l))
                }
                _ => Err(format!(
                    "a block at offset {} of {} + {} bytes lies outside the file ({} bytes)",
                    block.offset(),
                    block.metaDataLength(),
                    block.bodyLength(),
                    bytes.len()
                )),
            }
        };
        for block in footer.dictionaries().iter().flatten() {
            let data = check(block)?;
            check_buffers(data.as_slice(), block)?;
            guarded(|| decoder.read_dictionary(block, &data))?;
        }
        let blocks: Vec<Block> = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        for block in &blocks {
            check_buffers(check(block)?.as_slice(), block)?;
        }
        Ok(Self::File {
            buffer,
            decoder: Box::new(decoder),
            blocks,
            schema,
        })
    }

    fn open_stream(mut buffer: Buffer) -> Result<Self, String> {
        let mut decoder = StreamDecoder::new().with_require_alignment(false);
        // The schema message comes first; decode until it is known (the
        // same call may decode the first batch too: keep it).
        let mut first = None;
        while decoder.schema().is_none() {
            let before = buffer.len();
            if before == 0 {
                return Err("the stream ends before its schema message".into());
            }
            first = guarded(|| decoder.decode(&mut buffer))?;
            if buffer.len() == before && first.is_none() {
                return Err("the stream ends before its schema message".into());
            }
        }
        let schema = decoder.schema().expect("checked");
        Ok(Self::Stream {
            buffer,
            decoder,
            schema,
            first,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::File { schema, .. } | Self::Stream { schema, .. } => schema.clone(),
        }
    }

    /// The batches in file order, each with the mapping byte range it came from.
    pub fn into_batches(self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> {
        match self {
            Self::File {
                buffer,
                decoder,
                blocks,
                ..
            } => Box::new(blocks.into_iter().filter_map(move |block| {
                let len = block.bodyLength() as usize + block.metaDataLength() as usize;
                let data = buffer.slice_with_length(block.offset() as usize, len);
                guarded(|| decoder.read_record_batch(&block, &data)).transpose()
            })),
            Self::Stream {
                mut buffer,
                mut decoder,
                mut first,
                ..
            } => {
                let mut done = false;
                Box::new(std::iter::from_fn(move || {
                    if let Some(batch) = first.take() {
                        return Some(Ok(batch));
                    }
                    while !done {
                        if buffer.is_empty() {
                            done = true;
                            return decoder
                                .finish()
                                .err()
                                .map(|e| Err(format!("the stream ends inside a message: {e}")));
                        }
                        let before = buffer.len();
                        match guarded(|| decoder.decode(&mut buffer)) {
                            Ok(Some(batch)) => return Some(Ok(batch)),
                            Ok(None) if buffer.len() == before => {
                                done = true;
                                return None;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                done = true;
                                return Some(Err(e));
                            }
                        }
                    }
                    None
                }))
            }
        }
    }
}
