//! Loading a module's weights into a [`VarMap`], checked name by name against the checkpoint.
//!
//! The model asks for each weight by its PyTorch name through a [`VarBuilder`]; every request is
//! recorded. A weight the model needs but the file lacks, or whose shape differs, is collected and
//! reported all at once; weights in the file that the model never asked for are returned as
//! "unexpected" so the caller can warn, as transformers does.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap, var_builder::SimpleBackend};

use super::error::{ModelError, Result};

/// File names tried, in order.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// Weights read from one checkpoint file, waiting to be claimed by a model.
pub struct CheckedWeights {
    path: PathBuf,
    state: Arc<State>,
}

struct State {
    tensors: HashMap<String, Tensor>,
    varmap: VarMap,
    requested: Mutex<BTreeSet<String>>,
    problems: Mutex<Vec<String>>,
}

impl CheckedWeights {
    /// Finds and reads the weights file in `dir`. When `anchor` is not empty and the checkpoint
    /// stores it under a prefix (`bert.embeddings...` from a `BertForX` checkpoint), the prefix is
    /// stripped from every name.
    pub fn open(dir: &Path, anchor: &str) -> Result<Self> {
        let path = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| ModelError::MissingFile {
                folder: dir.to_path_buf(),
                what: "weights (model.safetensors or pytorch_model.bin)".into(),
            })?;
        let tensors = read_tensors(&path)?;
        let tensors = strip_prefix(tensors, anchor);
        Ok(Self {
            path,
            state: Arc::new(State {
                tensors,
                varmap: VarMap::new(),
                requested: Mutex::default(),
                problems: Mutex::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A builder whose every `get` takes the named tensor from the file into the `VarMap`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(Backend(self.state.clone())),
            DType::F32,
            device.clone(),
        )
    }

    /// Fails if any requested weight was missing or misshapen; otherwise returns the variables
    /// and the names in the file that nothing asked for (minus `ignore`).
    pub fn finish_with_unexpected(self, ignore: &[&str]) -> Result<(VarMap, Vec<String>)> {
        let problems = self.state.problems.lock().expect("poisoned").clone();
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(8).map(String::as_str).collect();
            let more = problems.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return Err(ModelError::Weights {
                path: self.path.clone(),
                message: format!("{}{tail}", shown.join("; ")),
            });
        }
        let requested = self.state.requested.lock().expect("poisoned");
        let mut unexpected: Vec<String> = self
            .state
            .tensors
            .keys()
            .filter(|k| !requested.contains(*k) && !ignore.contains(&k.as_str()))
            .cloned()
            .collect();
        unexpected.sort();
        Ok((self.state.varmap.clone(), unexpected))
    }

    /// As [`Self::finish_with_unexpected`], for modules where extra names do not matter.
    pub fn finish(self) -> Result<VarMap> {
        self.finish_with_unexpected(&[]).map(|(v, _)| v)
    }
}

fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let fail = |e: candle_core::Error| ModelError::Weights {
        path: path.to_path_buf(),
        message: first_line(&e.to_string()),
    };
    if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu).map_err(fail)
    } else {
        Ok(candle_core::pickle::read_all(path)
            .map_err(fail)?
            .into_iter()
            .collect())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

fn strip_prefix(tensors: HashMap<String, Tensor>, anchor: &str) -> HashMap<String, Tensor> {
    if anchor.is_empty() || tensors.contains_key(anchor) {
        return tensors;
    }
    let Some(prefix) = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(anchor))
        .find(|p| p.ends_with('.'))
        .map(str::to_string)
    else {
        return tensors;
    };
    tensors
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(&prefix) {
            Some(rest) => (rest.to_string(), v),
            None => (k, v),
        })
        .collect()
}

struct Backend(Arc<State>);

impl Backend {
    fn take(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let state = &self.0;
        state
            .requested
            .lock()
            .expect("poisoned")
            .insert(name.to_string());
        if let Some(var) = state.varmap.data().lock().expect("poisoned").get(name) {
            return Ok(var.as_tensor().clone());
        }
        let Some(t) = state.tensors.get(name) else {
            state
                .problems
                .lock()
                .expect("poisoned")
                .push(format!("missing weight `{name}`"));
            // A placeholder so construction can go on and report every problem at once.
            let shape = shape.cloned().unwrap_or_else(|| Shape::from(()));
            return Tensor::zeros(shape, dtype, dev);
        };
        if let Some(shape) = shape
            && t.shape() != shape
        {
            state.problems.lock().expect("poisoned").push(format!(
                "weight `{name}` has shape {:?} in the file but the config implies {:?}",
                t.dims(),
                shape.dims()
            ));
            return Tensor::zeros(shape, dtype, dev);
        }
        let var = Var::from_tensor(&t.to_dtype(dtype)?.to_device(dev)?)?;
        let tensor = var.as_tensor().clone();
        state
            .varmap
            .data()
            .lock()
            .expect("poisoned")
            .insert(name.to_string(), var);
        Ok(tensor)
    }
}

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.take(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
    }

    #[test]
    fn reports_missing_misshapen_and_unexpected() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        write(
            dir.path(),
            &[
                ("a.weight", Tensor::zeros((2, 3), DType::F32, &dev).unwrap()),
                ("b.weight", Tensor::zeros(4, DType::F32, &dev).unwrap()),
                ("extra", Tensor::zeros(1, DType::F32, &dev).unwrap()),
            ],
        );
        let w = CheckedWeights::open(dir.path(), "").unwrap();
        let vb = w.var_builder(&dev);
        vb.get((2, 3), "a.weight").unwrap();
        let (_, unexpected) = CheckedWeights::open(dir.path(), "")
            .unwrap()
            .finish_with_unexpected(&[])
            .unwrap();
        assert_eq!(
            unexpected.len(),
            3,
            "nothing was requested from the second one"
        );
        vb.get(5, "b.weight").unwrap();
        vb.get(1, "c.weight").unwrap();
        let err = w.finish().err().expect("problems reported").to_string();
        assert!(err.contains("missing weight `c.weight`"), "{err}");
        assert!(err.contains("`b.weight` has shape [4]"), "{err}");
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn strips_a_checkpoint_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        write(
            dir.path(),
            &[(
                "bert.embeddings.word_embeddings.weight",
                Tensor::zeros((2, 3), DType::F32, &dev).unwrap(),
            )],
        );
        let w = CheckedWeights::open(dir.path(), "embeddings.word_embeddings.weight").unwrap();
        w.var_builder(&dev)
            .get((2, 3), "embeddings.word_embeddings.weight")
            .unwrap();
        let (vars, unexpected) = w.finish_with_unexpected(&[]).unwrap();
        assert!(unexpected.is_empty());
        assert_eq!(vars.all_vars().len(), 1);
    }

    #[test]
    fn no_weights_and_corrupt_weights_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = CheckedWeights::open(dir.path(), "")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing weights (model.safetensors"), "{err}");
        std::fs::write(
            dir.path().join("model.safetensors"),
            b"\x10\0\0\0\0\0\0\0not json at all",
        )
        .unwrap();
        let err = CheckedWeights::open(dir.path(), "")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("model.safetensors: cannot load weights"),
            "{err}"
        );
    }
}
