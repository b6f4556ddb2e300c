//! roo-kernels: models in one IR, imported from the libraries' own files, and the scorers that run them.
//!
//! - [`model`]: the IR (`Model`: linear or tree ensemble) with its content-hash version.
//! - [`load_model`] / [`model_from_bytes`]: XGBoost JSON and UBJSON, LightGBM text, roo linear JSON.
//! - [`reference`]: scalar scorers, the oracle every fast scorer is tested against.
//! - [`cpu::CpuScorer`]: the fast CPU scorers (blocked, lockstep tree walks; vectorised linear models).
//! - [`gpu::GpuScorer`] (feature `gpu`, on by default): the same contract as wgpu compute shaders.
//! - [`FeatureBinding`]: feeds a model from Arrow record batches and appends its scores.
//!
//! This crate does no file or network I/O beyond reading a model file, and
//! knows nothing of configs or pipelines.
//!
//! ```no_run
//! let model = roo_kernels::load_model("fraud.json")?;
//! println!("{} features, version {}", model.n_features(), model.version);
//! # Ok::<(), roo_kernels::ModelError>(())
//! ```

mod batch;
pub mod cpu;
mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
mod import;
pub mod model;
pub mod reference;

pub use batch::FeatureBinding;
pub use error::{BindError, ModelError};
pub use import::{load_model, model_from_bytes, read_model_file, MODEL_FILE_BYTES_MAX};
pub use model::{Link, Model, ModelBody, ModelFormat, ModelSummary, ModelVersion};
