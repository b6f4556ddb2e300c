//! Models as the runtime holds them: imported and compiled once
//! ([`CompiledModel`]), bound to an input schema ([`BoundModel`]), held by
//! a scoring operator and swapped between batches ([`ModelSlot`]), scoring
//! batches of any schema that holds the features ([`BatchScorer`]), and the
//! store of uploaded models (`store.rs`, [`ModelStore`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float32Array, Int32Array, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use roo_kernels::{model_from_bytes, read_model_file, BindError, FeatureBinding, Model};
use thiserror::Error;

use crate::device::{Begun, Device, DeviceScorer, Placement};

/// Why a model could not be loaded, compiled, bound, scored or stored.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Import(#[from] roo_kernels::ModelError),
    #[error("model {origin}: {message}")]
    Device { origin: String, message: String },
    #[error("model {origin} ({version}) does not fit the input")]
    Bind {
        origin: String,
        version: String,
        #[source]
        source: BindError,
    },
    #[error(
        "the input already has a column named '{0}', which the model's output would overwrite"
    )]
    OutputClash(String),
    #[error("assembling the scored batch")]
    Arrow(#[source] ArrowError),
    #[error("model store {path}")]
    StoreIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the model store holds {held} models, all in use; activate another first")]
    StoreFull { held: usize },
}

/// How a bound model names what it appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputNaming {
    /// The decision: `score` (or `score_0`, … per class) and `model_version`.
    Live,
    /// A shadow named N: `score_N` (or `score_0_N`, …) and `model_version_N`.
    Shadow(String),
}

impl OutputNaming {
    fn outputs(&self, model: &Model) -> Vec<String> {
        let names = model.output_names();
        match self {
            Self::Live => names,
            Self::Shadow(n) => names.into_iter().map(|o| format!("{o}_{n}")).collect(),
        }
    }

    fn version_column(&self) -> String {
        match self {
            Self::Live => "model_version".into(),
            Self::Shadow(n) => format!("model_version_{n}"),
        }
    }

    fn metadata_key(&self) -> String {
        match self {
            Self::Live => "roo.model.version".into(),
            Self::Shadow(n) => format!("roo.shadow.{n}.version"),
        }
    }
}

/// A model imported and compiled for its device (the CPU scorer always, the
/// GPU scorer when asked for), shared by every schema it is bound to.
pub struct CompiledModel {
    pub model: Model,
    pub scorer: DeviceScorer,
    /// `sha256:…` of the model file's bytes.
    pub version: String,
    /// Where it came from: a path, or `upload:NAME`.
    pub origin: String,
    /// The file's bytes, as imported: what the audit log's model store
    /// keeps, so a replay never depends on a file since replaced.
    pub bytes: Arc<[u8]>,
}

impl CompiledModel {
    pub fn load(path: &Path, device: Device) -> Result<Arc<Self>, ModelError> {
        let bytes = read_model_file(path)?;
        let origin = path.display().to_string();
        let model = model_from_bytes(&bytes, &origin)?;
        Self::compile(model, origin, bytes.into(), device)
    }

    /// Imports a model file's bytes (any format roo reads, recognised by
    /// content); `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str, device: Device) -> Result<Arc<Self>, ModelError> {
        let model = model_from_bytes(bytes, origin)?;
        Self::compile(model, origin.to_string(), bytes.into(), device)
    }

    fn compile(
        model: Model,
        origin: String,
        bytes: Arc<[u8]>,
        device: Device,
    ) -> Result<Arc<Self>, ModelError> {
        Ok(Arc::new(Self {
            bytes,
            scorer: DeviceScorer::new(&model, device).map_err(|message| ModelError::Device {
                origin: origin.clone(),
                message,
            })?,
            version: model.version.to_string(),
            origin,
            model,
        }))
    }

    /// This model compiled for `device`: itself when it already is.
    pub fn for_device(self: &Arc<Self>, device: Device) -> Result<Arc<Self>, ModelError> {
        if self.scorer.mode() == device {
            Ok(self.clone())
        } else {
            Self::compile(
                self.model.clone(),
                self.origin.clone(),
                self.bytes.clone(),
                device,
            )
        }
    }

    /// "trees", "linear" or "mlp".
    pub fn family(&self) -> &'static str {
        match self.model.body {
            roo_kernels::ModelBody::Linear(_) => "linear",
            roo_kernels::ModelBody::Trees(_) => "trees",
            roo_kernels::ModelBody::Mlp(_) => "mlp",
        }
    }
}

/// A compiled model bound to one input schema: which columns feed it and
/// the output schema (the input, the score columns, `model_version`).
pub struct BoundModel {
    pub(crate) compiled: Arc<CompiledModel>,
    binding: FeatureBinding,
    input_schema: SchemaRef,
    /// The dictionary of the `model_version` column, shared by every batch.
    version_values: ArrayRef,
    output_schema: SchemaRef,
}

impl BoundModel {
    /// Binds as the pipeline's decision ([`OutputNaming::Live`]).
    pub fn bind(compiled: Arc<CompiledModel>, input: &SchemaRef) -> Result<Self, ModelError> {
        Self::bind_as(compiled, input, &OutputNaming::Live)
    }

    pub fn bind_as(
        compiled: Arc<CompiledModel>,
        input: &SchemaRef,
        naming: &OutputNaming,
    ) -> Result<Self, ModelError> {
        let binding = FeatureBinding::with_outputs(
            &compiled.model,
            input,
            &naming.outputs(&compiled.model),
            &naming.metadata_key(),
        )
        .map_err(|source| ModelError::Bind {
            origin: compiled.origin.clone(),
            version: compiled.version.clone(),
            source,
        })?;
        let mut fields: Vec<Field> = binding
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let version_column = naming.version_column();
        if fields.iter().any(|f| *f.name() == version_column) {
            return Err(ModelError::OutputClash(version_column));
        }
        fields.push(Field::new(
            version_column,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ));
        let metadata = binding.output_schema().metadata().clone();
        Ok(Self {
            version_values: Arc::new(StringArray::from(vec![compiled.version.as_str()])),
            // The version in the schema metadata too: a file sink starts a
            // new file when it changes, so each file names one model.
            output_schema: Arc::new(Schema::new_with_metadata(fields, metadata)),
            input_schema: input.clone(),
            binding,
            compiled,
        })
    }

    pub fn version(&self) -> &str {
        &self.compiled.version
    }

    /// The model's features, in its order.
    pub fn feature_names(&self) -> &[String] {
        &self.compiled.model.feature_names
    }

    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Scores `batch` (of the bound schema): the input columns, the
    /// scores, the model version; and where it was scored.
    pub fn score(
        &self,
        batch: &RecordBatch,
        pool: &rayon::ThreadPool,
    ) -> Result<(RecordBatch, Placement), ModelError> {
        let begun = self.begin(batch, pool)?;
        self.finish(begun, pool)
    }

    /// Starts scoring `batch`: done on return on the CPU, in flight on the
    /// GPU until [`Self::finish`] (so the next batch can be begun first).
    pub fn begin(
        &self,
        batch: &RecordBatch,
        pool: &rayon::ThreadPool,
    ) -> Result<BegunBatch, ModelError> {
        let rows = batch.num_rows();
        let arrays = self
            .binding
            .feature_arrays(batch)
            .map_err(ModelError::Arrow)?;
        let mut scores = vec![vec![0f32; rows]; self.compiled.model.n_outputs()];
        let features: Vec<&[f32]> = arrays.iter().map(|a| a.values().as_ref()).collect();
        let mut out: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
        let begun = self.compiled.scorer.begin(&features, &mut out, pool);
        Ok(BegunBatch {
            batch: batch.clone(),
            arrays,
            scores,
            begun,
        })
    }

    /// Completes a batch [`Self::begin`] started.
    pub fn finish(
        &self,
        begun: BegunBatch,
        pool: &rayon::ThreadPool,
    ) -> Result<(RecordBatch, Placement), ModelError> {
        let BegunBatch {
            batch,
            arrays,
            mut scores,
            begun,
        } = begun;
        let rows = batch.num_rows();
        let placement = {
            let features: Vec<&[f32]> = arrays.iter().map(|a| a.values().as_ref()).collect();
            let mut out: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
            self.compiled
                .scorer
                .finish(begun, &features, &mut out, pool)
        };
        let scored = self
            .binding
            .with_scores(&batch, scores.into_iter().map(Float32Array::from).collect())
            .map_err(ModelError::Arrow)?;
        let version: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(vec![0; rows]),
            self.version_values.clone(),
        ));
        let mut columns = scored.columns().to_vec();
        columns.push(version);
        let batch =
            RecordBatch::try_new(self.output_schema.clone(), columns).map_err(ModelError::Arrow)?;
        Ok((batch, placement))
    }
}

/// A batch [`BoundModel::begin`] started: its columns and score buffers,
/// held while the GPU works.
pub struct BegunBatch {
    batch: RecordBatch,
    arrays: Vec<Float32Array>,
    scores: Vec<Vec<f32>>,
    begun: Begun,
}

impl BegunBatch {
    /// Whether the batch is still on the GPU.
    pub fn is_pending(&self) -> bool {
        self.begun.is_pending()
    }
}

/// The model a pipeline scores with now; swapped whole between batches.
pub(crate) type ModelCell = Arc<RwLock<Arc<BoundModel>>>;

/// One scoring operator's model (the pipeline's, or a shadow's): shared by
/// the operator, which reads it once per batch, and the pipeline, which
/// swaps it. A new model is loaded and compiled before the lock is taken;
/// the lock is held only for the pointer swap.
pub struct ModelSlot {
    naming: OutputNaming,
    input_schema: SchemaRef,
    device: Device,
    /// The file a reload reads: the config's, or the last one activated.
    path: Mutex<PathBuf>,
    cell: ModelCell,
}

impl ModelSlot {
    /// Loads and compiles the model once and binds it to `input_schema`.
    pub fn load(
        path: &Path,
        device: Device,
        input_schema: &SchemaRef,
        naming: OutputNaming,
    ) -> Result<Self, ModelError> {
        let compiled = CompiledModel::load(path, device)?;
        Self::with_model(compiled, path, device, input_schema, naming)
    }

    /// A slot holding an already compiled model.
    pub fn with_model(
        compiled: Arc<CompiledModel>,
        path: &Path,
        device: Device,
        input_schema: &SchemaRef,
        naming: OutputNaming,
    ) -> Result<Self, ModelError> {
        let bound = BoundModel::bind_as(compiled, input_schema, &naming)?;
        Ok(Self {
            naming,
            input_schema: input_schema.clone(),
            device,
            path: Mutex::new(path.to_path_buf()),
            cell: Arc::new(RwLock::new(Arc::new(bound))),
        })
    }

    /// The model scoring now.
    pub fn current(&self) -> Arc<BoundModel> {
        self.cell.read().expect("not poisoned").clone()
    }

    pub fn path(&self) -> PathBuf {
        self.path.lock().expect("not poisoned").clone()
    }

    pub fn naming(&self) -> &OutputNaming {
        &self.naming
    }

    pub(crate) fn cell(&self) -> ModelCell {
        self.cell.clone()
    }

    /// Loads the model file again and swaps it in; refused (the current
    /// model scoring on) when it does not load or fit.
    pub fn reload(&self) -> Result<String, ModelError> {
        let path = self.path();
        let compiled = CompiledModel::load(&path, self.device)?;
        self.swap(compiled)
    }

    /// Swaps in `model` (from `path`, which later reloads read).
    pub fn activate(&self, model: Arc<CompiledModel>, path: &Path) -> Result<String, ModelError> {
        // An uploaded model was compiled for the store's device: recompiled
        // here when this slot scores on another.
        let version = self.swap(model.for_device(self.device)?)?;
        *self.path.lock().expect("not poisoned") = path.to_path_buf();
        Ok(version)
    }

    fn swap(&self, compiled: Arc<CompiledModel>) -> Result<String, ModelError> {
        let bound = BoundModel::bind_as(compiled, &self.input_schema, &self.naming)?;
        let version = bound.version().to_string();
        *self.cell.write().expect("not poisoned") = Arc::new(bound);
        Ok(version)
    }
}

/// Where a [`BatchScorer`] takes its model from.
#[derive(Clone)]
enum ScorerModel {
    /// A pipeline's current model: a swap applies from the next batch.
    Pipeline(ModelCell),
    Fixed(Arc<CompiledModel>),
}

/// Scores batches of any schema that holds the model's features (a
/// client's stream), binding once per schema and model version.
pub struct BatchScorer {
    model: ScorerModel,
    pool: Arc<rayon::ThreadPool>,
    bound: Option<Arc<BoundModel>>,
}

impl BatchScorer {
    pub(crate) fn of_pipeline(cell: ModelCell, pool: Arc<rayon::ThreadPool>) -> Self {
        Self {
            model: ScorerModel::Pipeline(cell),
            pool,
            bound: None,
        }
    }

    pub fn of_model(model: Arc<CompiledModel>, pool: Arc<rayon::ThreadPool>) -> Self {
        Self {
            model: ScorerModel::Fixed(model),
            pool,
            bound: None,
        }
    }

    /// The model a batch of `schema` would be scored with now, bound to it:
    /// an error says why the schema does not fit.
    pub fn bind(&mut self, schema: &SchemaRef) -> Result<Arc<BoundModel>, ModelError> {
        let current = match &self.model {
            ScorerModel::Pipeline(cell) => {
                let bound = cell.read().expect("not poisoned").clone();
                if bound.input_schema.fields() == schema.fields() {
                    return Ok(bound);
                }
                bound.compiled.clone()
            }
            ScorerModel::Fixed(m) => m.clone(),
        };
        if let Some(b) = &self.bound {
            if Arc::ptr_eq(&b.compiled, &current) && b.input_schema.fields() == schema.fields() {
                return Ok(b.clone());
            }
        }
        let b = Arc::new(BoundModel::bind(current, schema)?);
        self.bound = Some(b.clone());
        Ok(b)
    }

    /// Scores one batch with the current model; on the rayon pool when it
    /// spans more than one chunk.
    pub fn score(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ModelError> {
        let bound = self.bind(&batch.schema())?;
        bound.score(batch, &self.pool).map(|(batch, _)| batch)
    }
}

mod store;

pub use store::{ModelStore, StoredModel};
