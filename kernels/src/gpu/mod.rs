//! The GPU scorer: the same contract as [`crate::reference`] and
//! [`crate::cpu::CpuScorer`], run as wgpu compute shaders (`shaders/`).
//!
//! - Control plane, once per model version: the model becomes a WGSL
//!   module with its shape as constants, and its parameters (tree nodes,
//!   weights) are uploaded to the device once ([`GpuScorer::new`]).
//! - Data plane, per batch: rows are cut into chunks that fit the adapter's
//!   largest storage binding (and [`GpuOptions::chunk_bytes`]); each chunk
//!   goes through a pooled slot (a mapped upload buffer, the input and
//!   output storage buffers, a mapped readback buffer) and two chunks are in
//!   flight, so one chunk's upload and readback overlap the other's compute.
//!   [`GpuScorer::submit`] and [`GpuScorer::finish`] split a call, so a
//!   caller streaming small batches keeps two batches in flight instead.
//!   No buffer is allocated per batch once the pool is warm.
//! - Semantics: inputs reach the shaders as raw f32 bits, and every test a
//!   NaN or infinity could upset is done on the bits (see
//!   `shaders/common.wgsl`), so trees route missing values exactly as the
//!   reference does. Linear and MLP rows with a non-finite input are listed
//!   by the shader and scored on the CPU by the reference scorer.
//! - Failures (device lost, out of memory, a timeout, a wgpu error) come
//!   back as a [`GpuError`]; the caller retries the batch on the CPU.
//!
//! Tolerances against the reference: trees `1e-6 + 2^-23 × trees ×
//! Σ_t max|leaf_t|` (margins summed in f32, not f64); linear and MLP as for
//! the CPU scorer (`tests/equivalence.rs`).

mod device;
mod program;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use device::{adapters, no_hardware_gpu, AdapterKind, AdapterReport, GpuContext};

use crate::model::Model;
use program::{FIXUP_CAP, WORKGROUP};

/// Why a batch did not score on the GPU.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU: {0}")]
    NoAdapter(String),
    #[error("the GPU scorer does not run this model: {0}")]
    Unsupported(String),
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    #[error("GPU did not finish a chunk within {0:?}")]
    Timeout(Duration),
    #[error("GPU error: {0}")]
    Device(String),
}

impl GpuError {
    fn classify(message: String) -> Self {
        let lower = message.to_lowercase();
        if lower.contains("out of memory") || lower.contains("outofmemory") {
            Self::OutOfMemory(message)
        } else if lower.contains("lost") || lower.contains("destroyed") {
            Self::DeviceLost(message)
        } else {
            Self::Device(message)
        }
    }
}

/// Tuning of a [`GpuScorer`].
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// The most input bytes one chunk uploads; the adapter's largest
    /// storage binding caps it further.
    pub chunk_bytes: usize,
    /// How long one chunk may take before the device counts as hung.
    pub timeout: Duration,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: 32 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What one call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuRun {
    /// Chunks the rows were cut into.
    pub chunks: usize,
    /// Rows the shader handed to the CPU (a NaN or infinite input to a
    /// linear model or MLP).
    pub cpu_rows: usize,
}

/// Chunks in flight per call.
const IN_FLIGHT: usize = 2;
/// Slots (buffer sets) one scorer keeps at most, over concurrent callers.
const SLOTS_MAX: usize = 4;
/// The input's header: word 0 holds the chunk's rows.
const HEADER_BYTES: usize = 16;

/// A model compiled for the GPU, its parameters resident on the device.
/// Cheap to share across threads; concurrent calls share a bounded pool of
/// buffer slots.
pub struct GpuScorer {
    ctx: Arc<GpuContext>,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    params: Vec<(u32, wgpu::Buffer)>,
    output_binding: u32,
    /// The model, for the rows a linear or MLP shader hands back
    /// (non-finite inputs): the reference scorer gives them its exact
    /// NaN and infinity rules.
    fixup_model: Option<Model>,
    n_features: usize,
    n_outputs: usize,
    chunk_rows: usize,
    options: GpuOptions,
    pool: Arc<PoolState>,
}

/// The slots of one scorer: free ones, and how many exist (at most
/// [`SLOTS_MAX`]), shared with the [`GpuBatch`]es that hold some.
#[derive(Default)]
struct PoolState {
    pool: Mutex<Pool>,
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    free: Vec<Slot>,
    created: usize,
}

impl PoolState {
    fn release(&self, slot: Slot) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(slot);
        self.freed.notify_one();
    }

    /// Slots that will not come back (their chunk failed, or their batch
    /// was dropped unfinished).
    fn forget(&self, slots: usize) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.created -= slots.min(pool.created);
        drop(pool);
        self.freed.notify_all();
    }
}

/// A batch on its way through the GPU: its first chunks submitted by
/// [`GpuScorer::submit`], the rest and the results taken by
/// [`GpuScorer::finish`]. Between the two the caller may submit another
/// batch, so that two batches are in flight. Dropped unfinished, its slots
/// are given up.
pub struct GpuBatch {
    pool: Arc<PoolState>,
    in_flight: VecDeque<InFlight>,
    /// The first row not yet submitted.
    next: usize,
    rows: usize,
    run: GpuRun,
    fixup_rows: Vec<usize>,
}

impl GpuBatch {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether any of its chunks is on the device. A batch submitted while
    /// the pool was taken has none: [`GpuScorer::finish`] does all its work.
    pub fn is_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }
}

impl Drop for GpuBatch {
    fn drop(&mut self) {
        if !self.in_flight.is_empty() {
            self.pool.forget(self.in_flight.len());
        }
    }
}

/// One chunk's buffers, reused from call to call.
struct Slot {
    upload: wgpu::Buffer,
    output: wgpu::Buffer,
    fixups: Option<wgpu::Buffer>,
    readback: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    input: wgpu::Buffer,
    /// Reports when the upload buffer is mapped for writing again (after the
    /// chunk that used it); `None` when it is mapped already (a new slot).
    upload_ready: Option<mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>>,
}

struct InFlight {
    slot: Slot,
    submission: wgpu::SubmissionIndex,
    start: usize,
    rows: usize,
    read: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

impl GpuScorer {
    /// Compiles `model` for the device and uploads its parameters.
    pub fn new(model: &Model, ctx: Arc<GpuContext>) -> Result<Self, GpuError> {
        Self::with_options(model, ctx, GpuOptions::default())
    }

    pub fn with_options(
        model: &Model,
        ctx: Arc<GpuContext>,
        options: GpuOptions,
    ) -> Result<Self, GpuError> {
        ctx.check()?;
        let program = program::compile(model)?;
        let n_features = model.n_features();
        let n_outputs = model.n_outputs();
        let binding_max = ctx.limits.max_storage_buffer_binding_size as usize;
        let buffer_max = ctx.limits.max_buffer_size as usize;
        for (_, bytes) in &program.params {
            if bytes.len() > binding_max.min(buffer_max) {
                return Err(GpuError::Unsupported(format!(
                    "its parameters take {} MiB, past the adapter's {} MiB storage binding",
                    bytes.len() >> 20,
                    binding_max >> 20
                )));
            }
        }
        let chunk_rows = chunk_rows(
            n_features,
            n_outputs,
            options.chunk_bytes,
            binding_max.min(buffer_max),
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        let device = &ctx.device;
        let scope = ErrorScopes::push(device);
        // With wgpu's bounds checks: turning them off (create_shader_module_trusted)
        // measured no faster on lavapipe, so the safe module it is.
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("roo scorer"),
            source: wgpu::ShaderSource::Wgsl(program.source.as_str().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("roo scorer"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let params = program
            .params
            .iter()
            .map(|(binding, bytes)| {
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("roo model parameters"),
                    size: bytes.len() as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                ctx.queue.write_buffer(&buffer, 0, bytes);
                (*binding, buffer)
            })
            .collect();
        scope.pop("compiling the model's shader")?;
        ctx.queue.submit([]);
        let fixup_model = program.fixups.then(|| model.clone());
        Ok(Self {
            ctx,
            pipeline,
            layout,
            params,
            output_binding: program.output_binding,
            fixup_model,
            n_features,
            n_outputs,
            chunk_rows,
            options,
            pool: Arc::new(PoolState::default()),
        })
    }

    pub fn adapter(&self) -> &AdapterReport {
        self.ctx.adapter()
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The most rows one chunk holds.
    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }

    /// Scores like [`crate::reference::score`]. On an error the outputs are
    /// unspecified and the caller scores the batch elsewhere.
    pub fn score(&self, features: &[&[f32]], out: &mut [&mut [f32]]) -> Result<GpuRun, GpuError> {
        let rows = crate::cpu::check_shapes(self.n_features, self.n_outputs, features, out);
        let batch = self.submit(features, rows)?;
        self.finish(batch, features, out)
    }

    /// Submits the first chunks of a batch of `rows` rows (two, or fewer
    /// when other callers hold the pool) and returns without waiting: it
    /// never blocks on the pool, so a caller holding another batch cannot
    /// deadlock with one doing the same.
    pub fn submit(&self, features: &[&[f32]], rows: usize) -> Result<GpuBatch, GpuError> {
        assert_eq!(
            features.len(),
            self.n_features,
            "one column per model feature"
        );
        assert!(
            features.iter().all(|f| f.len() == rows),
            "feature columns must have one value per row"
        );
        let mut batch = GpuBatch {
            pool: self.pool.clone(),
            in_flight: VecDeque::new(),
            next: 0,
            rows,
            run: GpuRun::default(),
            fixup_rows: Vec::new(),
        };
        if rows > 0 {
            self.ctx.check()?;
            guarded(|| self.advance(&mut batch, features, None))?;
        }
        Ok(batch)
    }

    /// Completes `batch` (submitted with the same `features`): the rest of
    /// its chunks, two in flight, and the scores into `out`.
    pub fn finish(
        &self,
        mut batch: GpuBatch,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
    ) -> Result<GpuRun, GpuError> {
        let rows = crate::cpu::check_shapes(self.n_features, self.n_outputs, features, out);
        assert_eq!(rows, batch.rows, "finish takes the batch's own rows");
        if rows == 0 {
            return Ok(batch.run);
        }
        guarded(|| {
            self.advance(&mut batch, features, Some(&mut *out))?;
            while let Some(done) = batch.in_flight.pop_front() {
                let slot = self.complete(done, features, out, &mut batch.fixup_rows)?;
                self.pool.release(slot);
            }
            Ok(())
        })?;
        if !batch.fixup_rows.is_empty() {
            batch.run.cpu_rows = batch.fixup_rows.len();
            self.score_on_cpu(&batch.fixup_rows, features, out);
        }
        Ok(batch.run)
    }

    /// Submits chunks of `batch` while a slot is at hand; with `out`, a
    /// full pipeline completes its oldest chunk to free one, until every
    /// chunk is submitted; without, it stops there.
    ///
    /// Only `finish` with no chunk of its own in flight waits for the pool,
    /// and its caller then holds no other slots (a batch with nothing in
    /// flight is not held; see `is_in_flight`). Anyone holding slots makes
    /// progress without waiting, so the pool cannot deadlock.
    fn advance(
        &self,
        batch: &mut GpuBatch,
        features: &[&[f32]],
        mut out: Option<&mut [&mut [f32]]>,
    ) -> Result<(), GpuError> {
        while batch.next < batch.rows {
            let slot = if batch.in_flight.len() < IN_FLIGHT {
                self.acquire(out.is_some() && batch.in_flight.is_empty())?
            } else {
                None
            };
            let slot = match (slot, out.as_deref_mut()) {
                (Some(slot), _) => slot,
                (None, Some(out)) => {
                    let done = batch.in_flight.pop_front().expect("a chunk is in flight");
                    self.complete(done, features, out, &mut batch.fixup_rows)?
                }
                (None, None) => return Ok(()),
            };
            let n = self.chunk_rows.min(batch.rows - batch.next);
            batch
                .in_flight
                .push_back(self.submit_chunk(slot, features, batch.next, n)?);
            batch.run.chunks += 1;
            batch.next += n;
        }
        Ok(())
    }

    /// A free slot, a new one while fewer than [`SLOTS_MAX`] exist, or
    /// (when `wait`) the next one released; `None` when none is at hand.
    fn acquire(&self, wait: bool) -> Result<Option<Slot>, GpuError> {
        let state = &self.pool;
        let mut pool = state.pool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(slot) = pool.free.pop() {
                return Ok(Some(slot));
            }
            if pool.created < SLOTS_MAX {
                pool.created += 1;
                drop(pool);
                return match self.new_slot() {
                    Ok(slot) => Ok(Some(slot)),
                    Err(e) => {
                        state.forget(1);
                        Err(e)
                    }
                };
            }
            if !wait {
                return Ok(None);
            }
            pool = state.freed.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn input_bytes(&self, rows: usize) -> u64 {
        (HEADER_BYTES + self.n_features * rows * 4) as u64
    }

    fn output_bytes(&self, rows: usize) -> u64 {
        (self.n_outputs * rows * 4) as u64
    }

    fn fixup_bytes(&self) -> u64 {
        if self.fixup_model.is_some() {
            (1 + FIXUP_CAP as u64) * 4
        } else {
            0
        }
    }

    fn new_slot(&self) -> Result<Slot, GpuError> {
        let device = &self.ctx.device;
        let scope = ErrorScopes::push(device);
        let buffer = |label, size: u64, usage, mapped_at_creation| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation,
            })
        };
        use wgpu::BufferUsages as U;
        let in_bytes = self.input_bytes(self.chunk_rows);
        let out_bytes = self.output_bytes(self.chunk_rows);
        let upload = buffer("roo upload", in_bytes, U::MAP_WRITE | U::COPY_SRC, true);
        let input = buffer("roo input", in_bytes, U::STORAGE | U::COPY_DST, false);
        let output = buffer("roo output", out_bytes, U::STORAGE | U::COPY_SRC, false);
        let fixups = (self.fixup_bytes() > 0).then(|| {
            buffer(
                "roo fixups",
                self.fixup_bytes(),
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
                false,
            )
        });
        let readback = buffer(
            "roo readback",
            out_bytes + self.fixup_bytes(),
            U::MAP_READ | U::COPY_DST,
            false,
        );
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: input.as_entire_binding(),
        }];
        entries.extend(self.params.iter().map(|(binding, b)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: b.as_entire_binding(),
        }));
        entries.push(wgpu::BindGroupEntry {
            binding: self.output_binding,
            resource: output.as_entire_binding(),
        });
        if let Some(f) = &fixups {
            entries.push(wgpu::BindGroupEntry {
                binding: self.output_binding + 1,
                resource: f.as_entire_binding(),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("roo chunk"),
            layout: &self.layout,
            entries: &entries,
        });
        scope.pop("allocating a chunk's buffers")?;
        Ok(Slot {
            upload,
            input,
            output,
            fixups,
            readback,
            bind_group,
            upload_ready: None,
        })
    }

    /// Fills `slot` with rows `start..start + rows` and submits their
    /// scoring. On an error the slot is given up.
    fn submit_chunk(
        &self,
        slot: Slot,
        features: &[&[f32]],
        start: usize,
        rows: usize,
    ) -> Result<InFlight, GpuError> {
        self.try_submit_chunk(slot, features, start, rows)
            .inspect_err(|_| self.pool.forget(1))
    }

    fn try_submit_chunk(
        &self,
        mut slot: Slot,
        features: &[&[f32]],
        start: usize,
        rows: usize,
    ) -> Result<InFlight, GpuError> {
        if let Some(ready) = slot.upload_ready.take() {
            self.wait_map(ready, None)?;
        }
        let in_bytes = self.input_bytes(rows);
        {
            let mut view = slot
                .upload
                .get_mapped_range_mut(0..in_bytes)
                .map_err(|e| GpuError::Device(format!("mapping the upload buffer: {e}")))?;
            let mut header = [0u8; HEADER_BYTES];
            header[..4].copy_from_slice(&(rows as u32).to_le_bytes());
            view.slice(..HEADER_BYTES).copy_from_slice(&header);
            for (j, column) in features.iter().enumerate() {
                let at = HEADER_BYTES + j * rows * 4;
                view.slice(at..at + rows * 4)
                    .copy_from_slice(f32_bytes(&column[start..start + rows]));
            }
        }
        slot.upload.unmap();
        let out_bytes = self.output_bytes(rows);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("roo chunk"),
            });
        encoder.copy_buffer_to_buffer(&slot.upload, 0, &slot.input, 0, in_bytes);
        if let Some(f) = &slot.fixups {
            encoder.clear_buffer(f, 0, Some(4));
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("roo score"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &slot.bind_group, &[]);
            let groups = (rows as u32).div_ceil(WORKGROUP);
            let x = groups.min(program::DISPATCH_X);
            pass.dispatch_workgroups(x, groups.div_ceil(program::DISPATCH_X), 1);
        }
        encoder.copy_buffer_to_buffer(&slot.output, 0, &slot.readback, 0, out_bytes);
        if let Some(f) = &slot.fixups {
            encoder.copy_buffer_to_buffer(f, 0, &slot.readback, out_bytes, self.fixup_bytes());
        }
        let submission = self.ctx.queue.submit([encoder.finish()]);
        let read_bytes = out_bytes + self.fixup_bytes();
        let (tx, read) = mpsc::channel();
        slot.readback
            .map_async(wgpu::MapMode::Read, 0..read_bytes, move |r| {
                let _ = tx.send(r);
            });
        let (tx, ready) = mpsc::channel();
        slot.upload.map_async(wgpu::MapMode::Write, .., move |r| {
            let _ = tx.send(r);
        });
        slot.upload_ready = Some(ready);
        Ok(InFlight {
            slot,
            submission,
            start,
            rows,
            read,
        })
    }

    /// Waits for a chunk, copies its scores out, and returns its slot. On
    /// an error the slot is given up.
    fn complete(
        &self,
        done: InFlight,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        fixup_rows: &mut Vec<usize>,
    ) -> Result<Slot, GpuError> {
        self.try_complete(done, features, out, fixup_rows)
            .inspect_err(|_| self.pool.forget(1))
    }

    fn try_complete(
        &self,
        done: InFlight,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        fixup_rows: &mut Vec<usize>,
    ) -> Result<Slot, GpuError> {
        let InFlight {
            slot,
            submission,
            start,
            rows,
            read,
        } = done;
        self.wait_map(read, Some(submission))?;
        self.ctx.check()?;
        let out_bytes = self.output_bytes(rows) as usize;
        {
            let view = slot
                .readback
                .get_mapped_range(0..out_bytes as u64 + self.fixup_bytes())
                .map_err(|e| GpuError::Device(format!("mapping the readback buffer: {e}")))?;
            for (k, column) in out.iter_mut().enumerate() {
                // One memcpy per output column out of the mapped buffer.
                f32_bytes_mut(&mut column[start..start + rows])
                    .copy_from_slice(&view[k * rows * 4..(k + 1) * rows * 4]);
            }
            if slot.fixups.is_some() {
                let word = |i: usize| {
                    let b = &view[out_bytes + 4 * i..out_bytes + 4 * i + 4];
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
                };
                let count = word(0);
                if count <= FIXUP_CAP as usize {
                    fixup_rows.extend((1..=count).map(|i| start + word(i)));
                } else {
                    // Too many to list: find them here.
                    fixup_rows.extend(
                        (start..start + rows)
                            .filter(|&r| features.iter().any(|f| !f[r].is_finite())),
                    );
                }
            }
        }
        slot.readback.unmap();
        Ok(slot)
    }

    /// Polls the device until a map callback reports.
    fn wait_map(
        &self,
        rx: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
        submission: Option<wgpu::SubmissionIndex>,
    ) -> Result<(), GpuError> {
        if let Ok(r) = rx.try_recv() {
            return r.map_err(|e| self.map_error(e));
        }
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: submission,
                timeout: Some(self.options.timeout),
            })
            .map_err(|e| match e {
                wgpu::PollError::Timeout => GpuError::Timeout(self.options.timeout),
                other => GpuError::Device(other.to_string()),
            })?;
        match rx.recv_timeout(self.options.timeout) {
            Ok(r) => r.map_err(|e| self.map_error(e)),
            Err(_) => Err(self
                .ctx
                .check()
                .err()
                .unwrap_or(GpuError::Timeout(self.options.timeout))),
        }
    }

    fn map_error(&self, e: wgpu::BufferAsyncError) -> GpuError {
        self.ctx
            .check()
            .err()
            .unwrap_or_else(|| GpuError::Device(format!("mapping a buffer: {e}")))
    }

    /// Scores the listed rows on the CPU with the reference scorer (inputs
    /// the shader does not take; rare, and exact there).
    fn score_on_cpu(&self, rows: &[usize], features: &[&[f32]], out: &mut [&mut [f32]]) {
        let model = self
            .fixup_model
            .as_ref()
            .expect("only linear and MLP list rows");
        let columns: Vec<Vec<f32>> = features
            .iter()
            .map(|f| rows.iter().map(|&r| f[r]).collect())
            .collect();
        let inputs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut scores = vec![vec![0f32; rows.len()]; self.n_outputs];
        crate::reference::score(
            model,
            &inputs,
            &mut scores.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
        );
        for (column, scores) in out.iter_mut().zip(&scores) {
            for (&r, s) in rows.iter().zip(scores) {
                column[r] = *s;
            }
        }
    }
}

impl Drop for GpuScorer {
    fn drop(&mut self) {
        // Let pending maps finish before the buffers go.
        let _ = self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_secs(5)),
        });
    }
}

/// Runs `f`, turning a panic inside wgpu (its way of reporting misuse) into
/// an error for the batch, which then goes to the CPU, never the process.
fn guarded<T>(f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic in wgpu");
            Err(GpuError::classify(message.to_string()))
        }
    }
}

/// Rows per chunk: the input, the output and the dispatch each within the
/// adapter's limits and the input within `chunk_bytes`.
fn chunk_rows(
    n_features: usize,
    n_outputs: usize,
    chunk_bytes: usize,
    binding_max: usize,
    workgroups_max: u32,
) -> usize {
    let per_row_in = 4 * n_features.max(1);
    let by_input = chunk_bytes.min(binding_max).saturating_sub(HEADER_BYTES) / per_row_in;
    let by_output = binding_max / (4 * n_outputs.max(1));
    let by_dispatch = workgroups_max.min(program::DISPATCH_X) as usize
        * workgroups_max as usize
        * WORKGROUP as usize;
    by_input.min(by_output).min(by_dispatch).max(1)
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// The bytes of an f32 slice, to be overwritten (with little-endian f32s,
/// as the shaders write them; wgpu's targets are little-endian).
fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}

/// Out-of-memory and validation scopes around device calls that allocate.
struct ErrorScopes {
    validation: wgpu::ErrorScopeGuard,
    memory: wgpu::ErrorScopeGuard,
}

impl ErrorScopes {
    fn push(device: &wgpu::Device) -> Self {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        Self { validation, memory }
    }

    fn pop(self, doing: &str) -> Result<(), GpuError> {
        if let Some(e) = pollster::block_on(self.memory.pop()) {
            return Err(GpuError::OutOfMemory(format!("{doing}: {e}")));
        }
        if let Some(e) = pollster::block_on(self.validation.pop()) {
            return Err(GpuError::classify(format!("{doing}: {e}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_binding_and_the_dispatch() {
        // 40 features at 128 MiB: 838,860 rows by the binding; 32 MiB caps first.
        assert_eq!(
            chunk_rows(40, 1, 32 << 20, 128 << 20, 65535),
            ((32 << 20) - 16) / 160
        );
        assert_eq!(
            chunk_rows(40, 1, usize::MAX, 128 << 20, 65535),
            ((128 << 20) - 16) / 160
        );
        // One feature: the dispatch (64 × 32768 × 65535) is far away; the binding is not.
        assert_eq!(
            chunk_rows(1, 1, usize::MAX, 1 << 20, 65535),
            ((1 << 20) - 16) / 4
        );
        assert_eq!(chunk_rows(1, 1, usize::MAX, usize::MAX >> 8, 2), 2 * 2 * 64);
    }
}
