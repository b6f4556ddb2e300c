//! Models uploaded to a running daemon (Flight `upload-model`), kept as
//! files so that a pipeline can be pointed at one and reload it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{CompiledModel, ModelError};
use crate::device::Device;

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
    pub fn open(dir: &Path, max_models: usize, device: Device) -> Result<Self, ModelError> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::StoreIo {
            path: dir.display().to_string(),
            source,
        })?;
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
    ) -> Result<Arc<StoredModel>, ModelError> {
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
                None => return Err(ModelError::StoreFull { held: models.len() }),
            }
        }
        let file = compiled.version.replace(':', "-") + ".model";
        let path = self.dir.join(&file);
        let partial = self.dir.join(format!(".{file}.partial"));
        std::fs::write(&partial, bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .and_then(|()| crate::sinks::layout::sync_dir(&self.dir))
            .map_err(|source| ModelError::StoreIo {
                path: path.display().to_string(),
                source,
            })?;
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
        assert!(refused.to_string().contains("all in use"), "{refused}");
        let broken = store.upload("e", b"{\"learner\": 3}", &[]).err().unwrap();
        assert!(broken.to_string().contains("upload:e"), "{broken}");
    }
}
