//! Models as the runtime holds them: imported and compiled once
//! ([`CompiledModel`]), bound to an input schema ([`BoundModel`]), scoring
//! batches of any schema that holds the features ([`BatchScorer`]), and the
//! store of uploaded models ([`ModelStore`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float32Array, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_kernels::{load_model, model_from_bytes, FeatureBinding, Model};

use crate::device::{Begun, Device, DeviceScorer, Placement};

/// A model imported and compiled for its device (the CPU scorer always, the
/// GPU scorer when asked for), shared by every schema it is bound to.
pub struct CompiledModel {
    pub model: Model,
    pub scorer: DeviceScorer,
    /// `sha256:…` of the model file's bytes.
    pub version: String,
    /// Where it came from: a path, or `upload:NAME`.
    pub origin: String,
}

impl CompiledModel {
    pub fn load(path: &Path, device: Device) -> Result<Arc<Self>, String> {
        let model = load_model(path).map_err(|e| e.to_string())?;
        Self::compile(model, path.display().to_string(), device)
    }

    /// Imports a model file's bytes (any format roo reads, recognised by
    /// content); `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str, device: Device) -> Result<Arc<Self>, String> {
        let model = model_from_bytes(bytes, origin).map_err(|e| e.to_string())?;
        Self::compile(model, origin.to_string(), device)
    }

    fn compile(model: Model, origin: String, device: Device) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            scorer: DeviceScorer::new(&model, device)
                .map_err(|e| format!("model {origin}: {e}"))?,
            version: model.version.to_string(),
            origin,
            model,
        }))
    }

    /// This model compiled for `device`: itself when it already is.
    pub fn for_device(self: &Arc<Self>, device: Device) -> Result<Arc<Self>, String> {
        if self.scorer.mode() == device {
            Ok(self.clone())
        } else {
            Self::compile(self.model.clone(), self.origin.clone(), device)
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
    pub fn bind(compiled: Arc<CompiledModel>, input: &SchemaRef) -> Result<Self, String> {
        let binding = FeatureBinding::new(&compiled.model, input).map_err(|e| {
            format!(
                "model {} ({}) does not fit the input: {e}",
                compiled.origin, compiled.version
            )
        })?;
        let mut fields: Vec<Field> = binding
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if fields.iter().any(|f| f.name() == "model_version") {
            return Err("the input already has a column named 'model_version'".into());
        }
        fields.push(Field::new(
            "model_version",
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

    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Scores `batch` (of the bound schema): the input columns, the
    /// scores, the model version; and where it was scored.
    pub fn score(
        &self,
        batch: &RecordBatch,
        pool: &rayon::ThreadPool,
    ) -> Result<(RecordBatch, Placement), String> {
        let begun = self.begin(batch, pool)?;
        self.finish(begun, pool)
    }

    /// Starts scoring `batch`: done on return on the CPU, in flight on the
    /// GPU until [`Self::finish`] (so the next batch can be begun first).
    pub fn begin(
        &self,
        batch: &RecordBatch,
        pool: &rayon::ThreadPool,
    ) -> Result<BegunBatch, String> {
        let rows = batch.num_rows();
        let arrays = self
            .binding
            .feature_arrays(batch)
            .map_err(|e| e.to_string())?;
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
    ) -> Result<(RecordBatch, Placement), String> {
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
            .map_err(|e| e.to_string())?;
        let version: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(vec![0; rows]),
            self.version_values.clone(),
        ));
        let mut columns = scored.columns().to_vec();
        columns.push(version);
        let batch =
            RecordBatch::try_new(self.output_schema.clone(), columns).map_err(|e| e.to_string())?;
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
    pub fn bind(&mut self, schema: &SchemaRef) -> Result<Arc<BoundModel>, String> {
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
    pub fn score(&mut self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let bound = self.bind(&batch.schema())?;
        bound.score(batch, &self.pool).map(|(batch, _)| batch)
    }
}

/// One model in the store.
pub struct StoredModel {
    pub name: String,
    pub path: PathBuf,
    pub compiled: Arc<CompiledModel>,
    pub uploaded: SystemTime,
    pub bytes: u64,
}

/// Models uploaded to a running daemon, kept as files in a directory
/// (`<version>.model`, written to a partial file and renamed) so that a
/// pipeline can be pointed at one and reload it. Bounded: at most
/// `max_models` are held; uploading past it evicts the oldest not in use.
pub struct ModelStore {
    dir: PathBuf,
    /// The device uploads are compiled for (a pipeline on another device
    /// recompiles at activation).
    device: Device,
    max_models: usize,
    models: Mutex<BTreeMap<String, Arc<StoredModel>>>,
}

impl ModelStore {
    pub fn open(dir: &Path, max_models: usize, device: Device) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            device,
            max_models: max_models.max(1),
            models: Mutex::new(BTreeMap::new()),
        })
    }

    /// Imports `bytes`, writes them to the store and returns the model. The
    /// same bytes uploaded twice are one model. `in_use` names versions
    /// that must not be evicted.
    pub fn upload(
        &self,
        name: &str,
        bytes: &[u8],
        in_use: &[String],
    ) -> Result<Arc<StoredModel>, String> {
        let origin = format!("upload:{name}");
        let compiled = CompiledModel::from_bytes(bytes, &origin, self.device)?;
        let mut models = self.models.lock().expect("not poisoned");
        if let Some(m) = models.get(&compiled.version) {
            return Ok(m.clone());
        }
        if models.len() >= self.max_models {
            let oldest = models
                .values()
                .filter(|m| !in_use.contains(&m.compiled.version))
                .min_by_key(|m| m.uploaded)
                .map(|m| m.compiled.version.clone());
            match oldest {
                Some(v) => {
                    if let Some(m) = models.remove(&v) {
                        let _ = std::fs::remove_file(&m.path);
                    }
                }
                None => {
                    return Err(format!(
                        "the model store holds {} models, all in use; activate another first",
                        models.len()
                    ))
                }
            }
        }
        let file = compiled.version.replace(':', "-") + ".model";
        let path = self.dir.join(&file);
        let partial = self.dir.join(format!(".{file}.partial"));
        std::fs::write(&partial, bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let stored = Arc::new(StoredModel {
            name: name.to_string(),
            path,
            compiled,
            uploaded: SystemTime::now(),
            bytes: bytes.len() as u64,
        });
        models.insert(stored.compiled.version.clone(), stored.clone());
        Ok(stored)
    }

    /// A stored model by version (`sha256:…`, or a unique prefix of its
    /// hex) or by upload name (the newest of that name).
    pub fn find(&self, key: &str) -> Option<Arc<StoredModel>> {
        let models = self.models.lock().expect("not poisoned");
        if let Some(m) = models.get(key) {
            return Some(m.clone());
        }
        let hex = key.strip_prefix("sha256:").unwrap_or(key);
        let by_prefix: Vec<_> = models
            .values()
            .filter(|m| hex.len() >= 8 && m.compiled.version["sha256:".len()..].starts_with(hex))
            .collect();
        if by_prefix.len() == 1 {
            return Some(by_prefix[0].clone());
        }
        models
            .values()
            .filter(|m| m.name == key)
            .max_by_key(|m| m.uploaded)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<StoredModel>> {
        self.models
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(bias: f32) -> Vec<u8> {
        format!(r#"{{"kind":"linear","features":["a","b"],"weights":[1.0,2.0],"bias":{bias}}}"#)
            .into_bytes()
    }

    #[test]
    fn the_store_keeps_one_copy_per_version_and_evicts_the_oldest_unused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path(), 2, Device::Cpu).unwrap();
        let a = store.upload("a", &linear(0.0), &[]).unwrap();
        let again = store.upload("a-again", &linear(0.0), &[]).unwrap();
        assert_eq!(a.compiled.version, again.compiled.version);
        assert_eq!(store.list().len(), 1);
        let b = store.upload("b", &linear(1.0), &[]).unwrap();
        assert!(b.path.exists());
        // Full: the third evicts the oldest that is not in use.
        let in_use = vec![a.compiled.version.clone()];
        let c = store.upload("c", &linear(2.0), &in_use).unwrap();
        assert!(store.find(&a.compiled.version).is_some());
        assert!(store.find("b").is_none(), "b was evicted");
        assert!(!b.path.exists());
        assert_eq!(
            store.find("c").unwrap().compiled.version,
            c.compiled.version
        );
        let prefix = &c.compiled.version["sha256:".len().."sha256:".len() + 12];
        assert_eq!(store.find(prefix).unwrap().name, "c");
        let all = vec![a.compiled.version.clone(), c.compiled.version.clone()];
        let refused = store.upload("d", &linear(3.0), &all).err().unwrap();
        assert!(refused.contains("all in use"), "{refused}");
        let broken = store.upload("e", b"{\"learner\": 3}", &[]).err().unwrap();
        assert!(broken.contains("upload:e"), "{broken}");
    }
}
