//! The GPU device: adapter choice, what it is, and its health.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::GpuError;

/// What kind of adapter a device is, for reports and the cost model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// A CPU implementation (Mesa lavapipe, SwiftShader): it works, but its
    /// cost is the CPU's; a cost model should not prefer it.
    Software,
    Other,
}

impl AdapterKind {
    fn of(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => Self::Discrete,
            wgpu::DeviceType::IntegratedGpu => Self::Integrated,
            wgpu::DeviceType::VirtualGpu => Self::Virtual,
            wgpu::DeviceType::Cpu => Self::Software,
            wgpu::DeviceType::Other => Self::Other,
        }
    }

    /// Preference when several adapters are present: lower is better.
    fn rank(self) -> u8 {
        match self {
            Self::Discrete => 0,
            Self::Integrated => 1,
            Self::Virtual => 2,
            Self::Other => 3,
            Self::Software => 4,
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discrete => "discrete GPU",
            Self::Integrated => "integrated GPU",
            Self::Virtual => "virtual GPU",
            Self::Software => "software (CPU) adapter",
            Self::Other => "other adapter",
        })
    }
}

/// An adapter as roo reports it.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub kind: AdapterKind,
    pub driver: String,
    pub driver_info: String,
    /// The largest storage buffer one binding may hold, in bytes.
    pub max_binding_bytes: u64,
}

impl AdapterReport {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        Self {
            name: info.name,
            backend: format!("{:?}", info.backend),
            kind: AdapterKind::of(info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            max_binding_bytes: adapter.limits().max_storage_buffer_binding_size,
        }
    }

    pub fn is_software(&self) -> bool {
        self.kind == AdapterKind::Software
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.kind)?;
        let driver = [self.driver.as_str(), self.driver_info.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !driver.is_empty() {
            write!(f, ", driver {driver}")?;
        }
        write!(f, ")")
    }
}

/// One opened device and its queue, shared by every GPU scorer in the
/// process. A device that is lost stays lost: scorers built on it fail
/// (their batches go to the CPU) and [`GpuContext::shared`] opens a new one.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    report: AdapterReport,
    lost: Arc<Mutex<Option<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

static SHARED: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);

fn instance() -> wgpu::Instance {
    // WGPU_BACKEND and friends are honoured, as in every wgpu program.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Why this machine cannot have a hardware GPU, found without loading a
/// graphics driver: on Linux every hardware adapter wgpu can drive has a
/// device node (`/dev/dri/renderD*` for Mesa's drivers, `/dev/nvidia*` for
/// NVIDIA's). With none, the only adapters are software ones, so a caller
/// that would refuse a software adapter anyway (`device = "auto"`) need
/// not pay for loading one (tens of MB of resident memory and tens of ms).
/// `None` elsewhere, and where a node exists.
pub fn no_hardware_gpu() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let any_node = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    if any_node("/dev/dri", "renderD") || any_node("/dev", "nvidia") {
        return None;
    }
    Some("no GPU device node (/dev/dri/renderD*, /dev/nvidia*): only software adapters could be found".into())
}

/// Every adapter this machine offers, best first.
pub fn adapters() -> Vec<AdapterReport> {
    let mut found: Vec<AdapterReport> = ranked_adapters().iter().map(AdapterReport::of).collect();
    found.dedup_by(|a, b| a.name == b.name && a.backend == b.backend);
    found
}

fn ranked_adapters() -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| AdapterKind::of(a.get_info().device_type).rank());
    adapters
}

impl GpuContext {
    /// The process's device, opened on first use (a discrete GPU if there
    /// is one, a software adapter last), or opened again after a loss.
    pub fn shared() -> Result<Arc<Self>, GpuError> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ctx) = shared.as_ref() {
            if ctx.lost().is_none() {
                return Ok(ctx.clone());
            }
        }
        let ctx = Arc::new(Self::open()?);
        *shared = Some(ctx.clone());
        Ok(ctx)
    }

    /// Opens a device of its own on the best adapter (tests use this to
    /// lose a device without touching the shared one).
    pub fn open() -> Result<Self, GpuError> {
        let adapters = ranked_adapters();
        let Some(adapter) = adapters.first() else {
            return Err(GpuError::NoAdapter(
                "wgpu found no adapter (on Linux: is a Vulkan driver installed, e.g. \
                 mesa-vulkan-drivers and libvulkan1?)"
                    .into(),
            ));
        };
        let report = AdapterReport::of(adapter);
        // Ask for what the adapter has: the largest bindings and buffers
        // make the fewest chunks.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("roo"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(format!("{report}: could not open a device: {e}")))?;
        let lost = Arc::new(Mutex::new(None));
        let errors = Arc::new(Mutex::new(Vec::new()));
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, message| {
                *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{reason:?}: {message}"));
            });
        }
        {
            // wgpu's default handler panics; here an error fails the batch
            // it belongs to, which then goes to the CPU.
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
                let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                if errors.len() < 16 {
                    errors.push(error.to_string());
                }
            }));
        }
        Ok(Self {
            device,
            queue,
            limits,
            report,
            lost,
            errors,
        })
    }

    pub fn adapter(&self) -> &AdapterReport {
        &self.report
    }

    /// Why the device was lost, once it has been.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Destroys the device, as a driver reset would: every later batch on
    /// it fails. For tests of the CPU retry.
    pub fn destroy(&self) {
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some("destroyed by roo".into());
        self.device.destroy();
    }

    /// Errors wgpu reported outside any scope since the last call.
    pub(crate) fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A device error, if one happened: lost, or reported by wgpu.
    pub(crate) fn check(&self) -> Result<(), GpuError> {
        if let Some(reason) = self.lost() {
            return Err(GpuError::DeviceLost(reason));
        }
        let errors = self.take_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GpuError::classify(errors.join("; ")))
        }
    }
}
