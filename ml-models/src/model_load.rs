use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment variable that points at a model directory, overriding the project cache.
pub const MODEL_DIR_ENV: &str = "BULWARK_MODEL_DIR";

/// The environment variable that points at the ONNX Runtime shared library.
pub const RUNTIME_PATH_ENV: &str = "ORT_DYLIB_PATH";

/// The name of the sentiment model directory under `ml-models/models/` (it ships with the
/// repository, checksummed).
pub const SENTIMENT_MODEL_NAME: &str = "sentiment-minilm-sst2";

/// The file name of the ONNX Runtime release the `ort` crate is paired with.
pub const RUNTIME_LIBRARY_NAME: &str = "libonnxruntime.so.1.31.1";

pub(crate) const MODEL_FILE: &str = "model.onnx";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const CONFIG_FILE: &str = "config.json";
const MANIFEST_FILE: &str = "SHA256SUMS";

/// Every file a loader reads, in the order their absence is reported.
const REQUIRED_FILES: [&str; 4] = [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, MANIFEST_FILE];

/// The files whose checksums the manifest must list.
const CHECKSUMMED_FILES: [&str; 3] = [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE];

/// Why a model could not be loaded. Every message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error(
        "model file {missing_file} is missing from {dir}: run `make model`, or set {MODEL_DIR_ENV} to a directory that holds the model",
        dir = .dir.display()
    )]
    MissingModel { dir: PathBuf, missing_file: String },
    #[error(
        "model file {file} is corrupt: its sha256 is {actual} but {MANIFEST_FILE} expects {expected}; restore the model directory (`git checkout ml-models/models`) and run `make model` to check it",
        file = .file.display()
    )]
    ChecksumMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "model file {file} is corrupt: {message}; restore the model directory (`git checkout ml-models/models`) and run `make model` to check it",
        file = .file.display()
    )]
    Corrupt { file: PathBuf, message: String },
    #[error("cannot read model file {file}: {source}", file = .file.display())]
    Unreadable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "ONNX Runtime library not found at {path}: run `make runtime`, or set {RUNTIME_PATH_ENV} to {RUNTIME_LIBRARY_NAME}",
        path = .path.display()
    )]
    MissingRuntime { path: PathBuf },
    #[error("ONNX Runtime failed: {message}")]
    Runtime { message: String },
    #[error("invalid model parameters: {message}")]
    InvalidParams { message: String },
}

impl ModelLoadError {
    /// Returns false: a model that failed to load fails the same way until someone fixes the
    /// files, the runtime or the parameters.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelLoadError::MissingModel { .. }
            | ModelLoadError::ChecksumMismatch { .. }
            | ModelLoadError::Corrupt { .. }
            | ModelLoadError::Unreadable { .. }
            | ModelLoadError::MissingRuntime { .. }
            | ModelLoadError::Runtime { .. }
            | ModelLoadError::InvalidParams { .. } => false,
        }
    }
}

/// Returns the sentiment model directory: `BULWARK_MODEL_DIR` when set and not empty, else
/// `<project_root>/ml-models/models/sentiment-minilm-sst2` (committed with the project).
pub fn locate_model_dir(env: &HashMap<String, String>, project_root: &Path) -> PathBuf {
    match env.get(MODEL_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => project_root
            .join("ml-models")
            .join("models")
            .join(SENTIMENT_MODEL_NAME),
    }
}

/// Returns the ONNX Runtime library path: `ORT_DYLIB_PATH` when set and not empty, else
/// `<project_root>/ml-models/cache/onnxruntime/libonnxruntime.so.1.31.1` (where `make runtime`
/// puts it).
pub fn locate_runtime(env: &HashMap<String, String>, project_root: &Path) -> PathBuf {
    match env.get(RUNTIME_PATH_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => project_root
            .join("ml-models")
            .join("cache")
            .join("onnxruntime")
            .join(RUNTIME_LIBRARY_NAME),
    }
}

/// The files of a model directory, each checked against the directory's `SHA256SUMS`.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedModelFiles {
    pub(crate) model: PathBuf,
    pub(crate) tokenizer: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) model_sha256: String,
}

/// Checks that `dir` holds every model file and that each matches the manifest, before anything
/// is parsed, so a truncated copy or a flipped bit is reported as such and not as a parse error.
pub(crate) fn verify_model_dir(dir: &Path) -> Result<VerifiedModelFiles, ModelLoadError> {
    if let Some(missing_file) = REQUIRED_FILES
        .iter()
        .find(|file_name| !dir.join(file_name).is_file())
    {
        return Err(ModelLoadError::MissingModel {
            dir: dir.to_path_buf(),
            missing_file: (*missing_file).to_owned(),
        });
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_text =
        std::fs::read_to_string(&manifest_path).map_err(|source| ModelLoadError::Unreadable {
            file: manifest_path.clone(),
            source,
        })?;
    let manifest = parse_manifest(&manifest_text).map_err(|message| ModelLoadError::Corrupt {
        file: manifest_path.clone(),
        message,
    })?;
    let mut model_sha256 = String::new();
    for file_name in CHECKSUMMED_FILES {
        let Some(expected) = manifest.get(file_name) else {
            return Err(ModelLoadError::Corrupt {
                file: manifest_path,
                message: format!("it lists no checksum for {file_name}"),
            });
        };
        let file = dir.join(file_name);
        let actual = sha256_file(&file)?;
        if actual != *expected {
            return Err(ModelLoadError::ChecksumMismatch {
                file,
                expected: expected.clone(),
                actual,
            });
        }
        if file_name == MODEL_FILE {
            model_sha256 = actual;
        }
    }
    Ok(VerifiedModelFiles {
        model: dir.join(MODEL_FILE),
        tokenizer: dir.join(TOKENIZER_FILE),
        config: dir.join(CONFIG_FILE),
        model_sha256,
    })
}

/// Parses `sha256sum` output (`<64 hex>  <name>`, or ` *<name>` in binary mode) into
/// lowercase checksums by file name.
fn parse_manifest(text: &str) -> Result<HashMap<String, String>, String> {
    let mut checksums = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((checksum, name)) = line.split_once(char::is_whitespace) else {
            return Err(format!("line {} is not `<sha256>  <file>`", index + 1));
        };
        let name = name.trim().trim_start_matches('*');
        if checksum.len() != 64 || !checksum.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(format!("line {} has no valid sha256", index + 1));
        }
        if name.is_empty() {
            return Err(format!("line {} names no file", index + 1));
        }
        checksums.insert(name.to_owned(), checksum.to_ascii_lowercase());
    }
    Ok(checksums)
}

/// Returns the lowercase hex sha256 of a file, streamed so large models are not held twice.
fn sha256_file(path: &Path) -> Result<String, ModelLoadError> {
    let unreadable = |source| ModelLoadError::Unreadable {
        file: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(unreadable)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// Proves the model directory comes from the environment first, then the project's own
    /// models folder, and that an empty variable counts as unset.
    #[test]
    fn locate_model_dir_prefers_the_environment() {
        let root = Path::new("/srv/bulwark");
        let cache = PathBuf::from("/srv/bulwark/ml-models/models/sentiment-minilm-sst2");
        assert_eq!(locate_model_dir(&env(&[]), root), cache);
        assert_eq!(locate_model_dir(&env(&[(MODEL_DIR_ENV, "")]), root), cache);
        assert_eq!(
            locate_model_dir(&env(&[(MODEL_DIR_ENV, "/models/minilm")]), root),
            PathBuf::from("/models/minilm")
        );
        assert_eq!(
            locate_model_dir(&env(&[(RUNTIME_PATH_ENV, "/lib/ort.so")]), root),
            cache
        );
    }

    /// Proves the runtime path comes from `ORT_DYLIB_PATH` first, then the project cache, and
    /// that an empty variable counts as unset.
    #[test]
    fn locate_runtime_prefers_the_environment() {
        let root = Path::new("/srv/bulwark");
        let cache =
            PathBuf::from("/srv/bulwark/ml-models/cache/onnxruntime/libonnxruntime.so.1.31.1");
        assert_eq!(locate_runtime(&env(&[]), root), cache);
        assert_eq!(locate_runtime(&env(&[(RUNTIME_PATH_ENV, "")]), root), cache);
        assert_eq!(
            locate_runtime(
                &env(&[(RUNTIME_PATH_ENV, "/opt/ort/libonnxruntime.so")]),
                root
            ),
            PathBuf::from("/opt/ort/libonnxruntime.so")
        );
        assert_eq!(
            locate_runtime(&env(&[(MODEL_DIR_ENV, "/models")]), root),
            cache
        );
    }

    /// Proves both `sha256sum` output modes parse, checksums are lowercased and blank lines are
    /// ignored.
    #[test]
    fn parse_manifest_reads_sha256sum_output() {
        let upper = "AB".repeat(32);
        let lower = "cd".repeat(32);
        let text = format!("{upper}  model.onnx\n\n{lower} *config.json\n");
        let manifest = parse_manifest(&text).unwrap();
        assert_eq!(manifest.len(), 2);
        assert_eq!(manifest["model.onnx"], "ab".repeat(32));
        assert_eq!(manifest["config.json"], lower);
    }

    /// Proves a malformed manifest line is rejected with its line number.
    #[test]
    fn parse_manifest_rejects_malformed_lines() {
        let short = parse_manifest("abc  model.onnx").unwrap_err();
        assert!(short.contains("line 1"), "{short}");
        let no_name =
            parse_manifest(&format!("{}  x\n{}  \n", "a".repeat(64), "b".repeat(64))).unwrap_err();
        assert!(no_name.contains("line 2"), "{no_name}");
        let not_hex = parse_manifest(&format!("{}  model.onnx", "g".repeat(64))).unwrap_err();
        assert!(not_hex.contains("no valid sha256"), "{not_hex}");
    }

    /// Proves no load error is retryable and the messages name the fix.
    #[test]
    fn load_errors_are_permanent_and_say_how_to_fix_them() {
        let missing_model = ModelLoadError::MissingModel {
            dir: PathBuf::from("/models"),
            missing_file: MODEL_FILE.to_owned(),
        };
        let missing_runtime = ModelLoadError::MissingRuntime {
            path: PathBuf::from("/lib/ort.so"),
        };
        let mismatch = ModelLoadError::ChecksumMismatch {
            file: PathBuf::from("/models/model.onnx"),
            expected: "aa".to_owned(),
            actual: "bb".to_owned(),
        };
        assert!(missing_model.to_string().contains("make model"));
        assert!(missing_model.to_string().contains(MODEL_DIR_ENV));
        assert!(missing_runtime.to_string().contains("make runtime"));
        assert!(missing_runtime.to_string().contains(RUNTIME_PATH_ENV));
        assert!(mismatch.to_string().contains("corrupt"));
        for error in [missing_model, missing_runtime, mismatch] {
            assert!(!error.is_retryable(), "{error}");
        }
    }
}
