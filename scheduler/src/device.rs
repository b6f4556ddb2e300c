//! Which device scores a batch: the CPU scorer, the GPU scorer, or the
//! cheaper of the two by a measured cost model; and the CPU retry when the
//! GPU fails.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use roo_kernels::cpu::CpuScorer;
#[cfg(feature = "gpu")]
use roo_kernels::gpu::{GpuBatch, GpuContext, GpuError, GpuScorer};

/// Why `auto` need not open a device: no hardware GPU can be here.
#[cfg(feature = "gpu")]
fn no_hardware_gpu() -> Option<GpuError> {
    roo_kernels::gpu::no_hardware_gpu().map(GpuError::NoAdapter)
}
use roo_kernels::Model;

#[cfg(not(feature = "gpu"))]
use gpu_off::{no_hardware_gpu, GpuBatch, GpuContext, GpuError, GpuScorer};

/// A roo built without the `gpu` feature: the GPU types exist but can hold
/// no value (uninhabited enums), so every GPU branch below compiles and is
/// statically dead; opening a device says why it cannot.
#[cfg(not(feature = "gpu"))]
mod gpu_off {
    use std::fmt;
    use std::sync::Arc;

    use roo_kernels::Model;

    #[derive(Debug)]
    pub struct GpuError;

    pub fn no_hardware_gpu() -> Option<GpuError> {
        None
    }

    impl fmt::Display for GpuError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("this roo was built without GPU support (cargo feature `gpu`)")
        }
    }

    pub enum GpuBatch {}

    impl GpuBatch {
        pub fn is_in_flight(&self) -> bool {
            match *self {}
        }
        pub fn rows(&self) -> usize {
            match *self {}
        }
    }

    pub enum Adapter {}

    impl Adapter {
        pub fn is_software(&self) -> bool {
            match *self {}
        }
    }

    impl fmt::Display for Adapter {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            match *self {}
        }
    }

    pub enum GpuContext {}

    impl GpuContext {
        pub fn shared() -> Result<Arc<Self>, GpuError> {
            Err(GpuError)
        }
        pub fn adapter(&self) -> &Adapter {
            match *self {}
        }
    }

    pub enum GpuScorer {}

    impl GpuScorer {
        pub fn new(_: &Model, ctx: Arc<GpuContext>) -> Result<Self, GpuError> {
            match *ctx {}
        }
        pub fn adapter(&self) -> &Adapter {
            match *self {}
        }
        pub fn score(&self, _: &[&[f32]], _: &mut [&mut [f32]]) -> Result<(), GpuError> {
            match *self {}
        }
        pub fn submit(&self, _: &[&[f32]], _: usize) -> Result<GpuBatch, GpuError> {
            match *self {}
        }
        pub fn finish(
            &self,
            batch: GpuBatch,
            _: &[&[f32]],
            _: &mut [&mut [f32]],
        ) -> Result<(), GpuError> {
            match batch {}
        }
    }
}

/// Rows per rayon task when a batch is split across cores.
pub(crate) const SCORE_CHUNK_ROWS: usize = 4096;

/// Which scorer runs a model's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// Every batch on the GPU (retried on the CPU when the GPU fails); no
    /// GPU at load is an error.
    Gpu,
    /// The cheaper device per batch, by the cost model. A software adapter
    /// (lavapipe) is never chosen: its cost is the CPU's, plus copies.
    Auto,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Auto => "auto",
        })
    }
}

/// Where one batch was scored.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    Cpu,
    Gpu,
    /// The GPU failed; the batch was scored again on the CPU.
    CpuRetry(String),
}

/// Counts of a scorer's batches by device.
#[derive(Default, Debug)]
pub struct DeviceCounts {
    pub cpu_batches: AtomicU64,
    pub gpu_batches: AtomicU64,
    pub gpu_rows: AtomicU64,
    /// Batches the GPU failed and the CPU then scored.
    pub cpu_retries: AtomicU64,
}

/// The cost model: nanoseconds for a batch of `rows` on each device.
/// Calibrated at load, then an exponentially weighted mean of every batch.
#[derive(Clone, Copy, Debug)]
struct Costs {
    cpu_ns_per_row: f64,
    /// A GPU batch costs `gpu_fixed_ns + rows × gpu_ns_per_row` (the round
    /// trip, then upload, compute and readback per row).
    gpu_fixed_ns: f64,
    gpu_ns_per_row: f64,
}

impl Costs {
    fn prefers_gpu(&self, rows: usize) -> bool {
        self.gpu_fixed_ns + rows as f64 * self.gpu_ns_per_row < rows as f64 * self.cpu_ns_per_row
    }
}

/// A batch [`DeviceScorer::begin`] started.
pub enum Begun {
    /// Scored (on the CPU).
    Done(Placement),
    /// On the GPU, for [`DeviceScorer::finish`].
    Gpu { batch: GpuBatch, started: Instant },
}

impl Begun {
    /// Whether part of the batch is on the GPU now: worth holding while
    /// the next batch is begun. (A GPU batch that found the slot pool taken
    /// has nothing in flight; holding it would hold nothing.)
    pub fn is_pending(&self) -> bool {
        matches!(self, Self::Gpu { batch, .. } if batch.is_in_flight())
    }
}

/// A model compiled for the CPU and, when asked for and available, the GPU.
pub struct DeviceScorer {
    cpu: CpuScorer,
    gpu: Option<GpuScorer>,
    mode: Device,
    costs: Mutex<Costs>,
    /// What runs the batches, in words (for logs and `list-models`).
    description: String,
    pub counts: DeviceCounts,
}

impl DeviceScorer {
    /// Compiles `model` for `mode`. `Gpu` with no usable GPU is an error
    /// that says why; `Auto` then scores on the CPU and says why.
    pub fn new(model: &Model, mode: Device) -> Result<Self, String> {
        let cpu = CpuScorer::new(model);
        let cpu_ns_per_row = calibrate(|f, o| cpu.score(f, o), model, 4096) / 4096.0;
        let mut costs = Costs {
            cpu_ns_per_row,
            gpu_fixed_ns: f64::INFINITY,
            gpu_ns_per_row: f64::INFINITY,
        };
        let (gpu, description) = match mode {
            Device::Cpu => (None, format!("the CPU ({:?})", cpu.isa())),
            Device::Gpu => {
                let gpu = GpuContext::shared()
                    .and_then(|ctx| GpuScorer::new(model, ctx))
                    .map_err(|e| format!("device = \"gpu\": {e}"))?;
                let description = format!("the GPU, {}", gpu.adapter());
                (Some(gpu), description)
            }
            Device::Auto => match no_hardware_gpu().map_or_else(GpuContext::shared, Err) {
                Err(e) => (None, format!("the CPU (auto: {e})")),
                Ok(ctx) if ctx.adapter().is_software() => (
                    None,
                    format!(
                        "the CPU (auto: the only adapter, {}, is software: it would cost the CPU's time plus copies)",
                        ctx.adapter()
                    ),
                ),
                Ok(ctx) => match GpuScorer::new(model, ctx) {
                    Err(e) => (None, format!("the CPU (auto: {e})")),
                    Ok(gpu) => {
                        let run = |f: &[&[f32]], o: &mut [&mut [f32]]| {
                            let _ = gpu.score(f, o);
                        };
                        calibrate(run, model, 4096); // warm: the pool's first slots
                        let small = calibrate(run, model, 4096);
                        let large = calibrate(run, model, 65536);
                        costs.gpu_ns_per_row = ((large - small) / (65536.0 - 4096.0)).max(0.0);
                        costs.gpu_fixed_ns = (small - 4096.0 * costs.gpu_ns_per_row).max(0.0);
                        let description = format!(
                            "the CPU or the GPU per batch, by cost (GPU {}: {:.0} µs a round trip + {:.1} ns a row; CPU {:.1} ns a row)",
                            gpu.adapter(),
                            costs.gpu_fixed_ns / 1e3,
                            costs.gpu_ns_per_row,
                            costs.cpu_ns_per_row
                        );
                        (Some(gpu), description)
                    }
                },
            },
        };
        Ok(Self {
            cpu,
            gpu,
            mode,
            costs: Mutex::new(costs),
            description,
            counts: DeviceCounts::default(),
        })
    }

    /// Scores every batch with `gpu` (a scorer on a device of the caller's
    /// choosing), retrying on the CPU as [`Device::Gpu`] does.
    pub fn on_gpu(model: &Model, gpu: GpuScorer) -> Self {
        let description = format!("the GPU, {}", gpu.adapter());
        Self {
            cpu: CpuScorer::new(model),
            gpu: Some(gpu),
            mode: Device::Gpu,
            costs: Mutex::new(Costs {
                cpu_ns_per_row: 0.0,
                gpu_fixed_ns: 0.0,
                gpu_ns_per_row: 0.0,
            }),
            description,
            counts: DeviceCounts::default(),
        }
    }

    pub fn cpu(&self) -> &CpuScorer {
        &self.cpu
    }

    pub fn gpu(&self) -> Option<&GpuScorer> {
        self.gpu.as_ref()
    }

    pub fn mode(&self) -> Device {
        self.mode
    }

    /// What scores the batches, in words.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The cost model's CPU time per row, in nanoseconds.
    pub fn cpu_ns_per_row(&self) -> f64 {
        self.costs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cpu_ns_per_row
    }

    /// Scores on the device the mode and the cost model pick. Never fails:
    /// a GPU error is counted, logged, and the batch scored on the CPU.
    pub fn score(
        &self,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        pool: &rayon::ThreadPool,
    ) -> Placement {
        let begun = self.begin(features, out, pool);
        self.finish(begun, features, out, pool)
    }

    /// Starts a batch: on the CPU it is scored before this returns; on the
    /// GPU its first chunks are submitted and [`Self::finish`] completes it,
    /// so a caller can begin the next batch first (two batches in flight).
    pub fn begin(
        &self,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        pool: &rayon::ThreadPool,
    ) -> Begun {
        let rows = out.first().map_or(0, |c| c.len());
        let use_gpu = match (&self.gpu, self.mode) {
            (None, _) | (_, Device::Cpu) => false,
            (Some(_), Device::Gpu) => true,
            (Some(_), Device::Auto) => self
                .costs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .prefers_gpu(rows),
        };
        if let (true, Some(gpu)) = (use_gpu, &self.gpu) {
            let started = Instant::now();
            match gpu.submit(features, rows) {
                Ok(batch) => return Begun::Gpu { batch, started },
                Err(e) => return Begun::Done(self.retry_on_cpu(e, features, out, pool)),
            }
        }
        self.score_on_cpu(features, out, pool);
        Begun::Done(Placement::Cpu)
    }

    /// Completes a batch [`Self::begin`] started, with the same columns.
    pub fn finish(
        &self,
        begun: Begun,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        pool: &rayon::ThreadPool,
    ) -> Placement {
        let (batch, started) = match begun {
            Begun::Done(placement) => return placement,
            Begun::Gpu { batch, started } => (batch, started),
        };
        let gpu = self.gpu.as_ref().expect("a GPU batch has a GPU scorer");
        let rows = batch.rows();
        match gpu.finish(batch, features, out) {
            Ok(_) => {
                self.observe(rows, started.elapsed(), true);
                self.counts.gpu_batches.fetch_add(1, Ordering::Relaxed);
                self.counts
                    .gpu_rows
                    .fetch_add(rows as u64, Ordering::Relaxed);
                Placement::Gpu
            }
            Err(e) => self.retry_on_cpu(e, features, out, pool),
        }
    }

    fn retry_on_cpu(
        &self,
        e: GpuError,
        features: &[&[f32]],
        out: &mut [&mut [f32]],
        pool: &rayon::ThreadPool,
    ) -> Placement {
        let rows = out.first().map_or(0, |c| c.len());
        let retries = self.counts.cpu_retries.fetch_add(1, Ordering::Relaxed) + 1;
        // The first failure and then every 1000th: a lost device fails
        // every batch after it.
        if retries == 1 || retries.is_multiple_of(1000) {
            tracing::warn!(
                "{e}; the batch of {rows} rows is scored on the CPU ({retries} GPU batches retried on the CPU so far)"
            );
        }
        self.score_on_cpu(features, out, pool);
        Placement::CpuRetry(e.to_string())
    }

    fn score_on_cpu(&self, features: &[&[f32]], out: &mut [&mut [f32]], pool: &rayon::ThreadPool) {
        let rows = out.first().map_or(0, |c| c.len());
        let started = Instant::now();
        if rows <= SCORE_CHUNK_ROWS {
            // One chunk: score here rather than wake a pool thread (a
            // thread hop costs more than it saves on a small batch).
            self.cpu.score(features, out);
        } else {
            pool.install(|| self.cpu.score_parallel(features, out, SCORE_CHUNK_ROWS));
        }
        self.observe(rows, started.elapsed(), false);
        self.counts.cpu_batches.fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, rows: usize, elapsed: Duration, gpu: bool) {
        if rows == 0 {
            return;
        }
        let ns = elapsed.as_nanos() as f64;
        let mut costs = self.costs.lock().unwrap_or_else(|e| e.into_inner());
        if gpu {
            // The round trip is the calibrated part; the mean follows the rest.
            let per_row = ((ns - costs.gpu_fixed_ns) / rows as f64).max(0.0);
            costs.gpu_ns_per_row = 0.9 * costs.gpu_ns_per_row + 0.1 * per_row;
        } else {
            costs.cpu_ns_per_row = 0.9 * costs.cpu_ns_per_row + 0.1 * ns / rows as f64;
        }
    }
}

/// Nanoseconds `score` takes on `rows` rows of zeros.
fn calibrate(score: impl Fn(&[&[f32]], &mut [&mut [f32]]), model: &Model, rows: usize) -> f64 {
    let columns = vec![vec![0f32; rows]; model.n_features()];
    let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let mut scores = vec![vec![0f32; rows]; model.n_outputs()];
    let mut out: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
    let started = Instant::now();
    score(&features, &mut out);
    started.elapsed().as_nanos() as f64
}

#[cfg(all(test, feature = "gpu"))]
mod tests {
    use std::sync::Arc;

    use roo_kernels::gpu::GpuContext;

    use super::*;

    fn model() -> Model {
        roo_kernels::load_model(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/model.json"),
        )
        .unwrap()
    }

    fn score(
        scorer: &DeviceScorer,
        columns: &[Vec<f32>],
        pool: &rayon::ThreadPool,
    ) -> (Vec<f32>, Placement) {
        let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut out = vec![0f32; columns[0].len()];
        let placement = scorer.score(&features, &mut [&mut out[..]], pool);
        (out, placement)
    }

    #[test]
    fn a_batch_the_gpu_fails_is_scored_on_the_cpu_and_counted() {
        let ctx = match GpuContext::open() {
            Ok(ctx) => Arc::new(ctx),
            Err(e) if std::env::var_os("ROO_REQUIRE_GPU").is_some() => {
                panic!("ROO_REQUIRE_GPU is set, but {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: the CPU retry test needs a GPU adapter: {e}");
                return;
            }
        };
        let model = model();
        let gpu = GpuScorer::new(&model, ctx.clone()).unwrap();
        let scorer = DeviceScorer::on_gpu(&model, gpu);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let columns: Vec<Vec<f32>> = (0..model.n_features())
            .map(|j| {
                (0..10_000)
                    .map(|r| ((r * 7 + j * 13) % 101) as f32 / 10.0)
                    .collect()
            })
            .collect();
        let (on_gpu, placement) = score(&scorer, &columns, &pool);
        assert_eq!(placement, Placement::Gpu);
        ctx.destroy();
        let (retried, placement) = score(&scorer, &columns, &pool);
        assert!(
            matches!(&placement, Placement::CpuRetry(reason) if reason.contains("lost")),
            "{placement:?}"
        );
        let (retried_again, _) = score(&scorer, &columns, &pool);
        assert_eq!(scorer.counts.gpu_batches.load(Ordering::Relaxed), 1);
        assert_eq!(scorer.counts.cpu_retries.load(Ordering::Relaxed), 2);
        assert_eq!(scorer.counts.cpu_batches.load(Ordering::Relaxed), 2);
        // Nothing lost: every row scored, the CPU's scores within the GPU's tolerance.
        let mut cpu = vec![0f32; 10_000];
        let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        scorer.cpu().score(&features, &mut [&mut cpu[..]]);
        assert_eq!(retried, cpu);
        assert_eq!(retried_again, cpu);
        for (g, c) in on_gpu.iter().zip(&cpu) {
            assert!((g - c).abs() < 1e-5, "GPU {g} CPU {c}");
        }
    }

    #[test]
    fn the_cost_model_sends_small_batches_to_the_cpu() {
        let costs = Costs {
            cpu_ns_per_row: 100.0,
            gpu_fixed_ns: 200_000.0,
            gpu_ns_per_row: 5.0,
        };
        // Crossover: 200,000 / (100 - 5) ≈ 2,105 rows.
        assert!(!costs.prefers_gpu(1));
        assert!(!costs.prefers_gpu(2_000));
        assert!(costs.prefers_gpu(2_200));
        assert!(costs.prefers_gpu(1 << 20));
    }
}
