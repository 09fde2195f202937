use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};
use tracing::{info, warn};

use crate::model_load::{ModelLoadError, VerifiedModelFiles, verify_model_dir};
use crate::{InferenceError, SentimentLabel, SentimentModel, SentimentScore};

/// The engine name reported with every result of an [`OnnxModel`].
pub const ONNX_ENGINE: &str = "onnx";

/// The longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are truncated.
pub const MAX_SEQUENCE_TOKENS: usize = 128;

/// The model release; the version reported with results appends the model file's checksum.
const MODEL_RELEASE: &str = "sentiment-minilm-sst2-v1";

/// How many hex digits of the model checksum the reported version carries.
const VERSION_CHECKSUM_DIGITS: usize = 8;

const INPUT_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const LOGITS: &str = "logits";

/// What an [`OnnxModel`] is loaded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxModelParams {
    /// The directory holding `model.onnx`, `tokenizer.json`, `config.json` and `SHA256SUMS`
    /// (see [`crate::locate_model_dir`]).
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library (see [`crate::locate_runtime`]). The first successful
    /// load in a process fixes the library; later loads reuse it whatever path they name.
    pub runtime_path: PathBuf,
    /// Threads one inference may use; the caller's thread is one of them.
    pub intra_op_threads: usize,
}

/// The MiniLM sentiment classifier (binary, fine-tuned on SST-2) run by ONNX Runtime.
///
/// It has no neutral class: every text is [`SentimentLabel::Positive`] when
/// `p(positive) >= 0.5`, else [`SentimentLabel::Negative`]; a neutral band is applied by callers.
///
/// Each text of a batch runs through the graph on its own, unpadded. The graph is dynamically
/// quantized: every `DynamicQuantizeLinear` picks one int8 scale for its whole input tensor, so
/// in a padded batch a text's activations are quantized with a range set by its neighbours and
/// by the padding. On the SST-2 dev set, batches of 32 padded to the longest moved
/// `p(positive)` by up to 0.38 against the same text alone and flipped 14 of 872 labels. Alone,
/// a text scores the same whatever it was batched with, which callers that batch requests
/// dynamically rely on; on two cores the throughput is close to that of padded batches.
pub struct OnnxModel {
    session: Session,
    tokenizer: Tokenizer,
    version: String,
    model_sha256: String,
    /// The `[1, sequence]` inputs of one text, kept between runs so steady traffic does not
    /// reallocate them.
    input_ids: Vec<i64>,
    attention_mask: Vec<i64>,
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OnnxModel")
            .field("version", &self.version)
            .field("model_sha256", &self.model_sha256)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Verifies the model files against their manifest, loads ONNX Runtime (once per process),
    /// then parses the tokenizer and the graph.
    pub fn load(params: &OnnxModelParams) -> Result<OnnxModel, ModelLoadError> {
        if params.intra_op_threads == 0 {
            return Err(ModelLoadError::InvalidParams {
                message: "intra_op_threads must be at least 1".to_owned(),
            });
        }
        let files = verify_model_dir(&params.model_dir)?;
        check_label_order(&files.config)?;
        let environment = runtime_environment(&params.runtime_path)?;
        let tokenizer = load_tokenizer(&files.tokenizer)?;
        let session = build_session(environment, &files, params.intra_op_threads)?;
        let version = format!(
            "{MODEL_RELEASE}+{}",
            &files.model_sha256[..VERSION_CHECKSUM_DIGITS]
        );
        info!(
            %version,
            model_dir = %params.model_dir.display(),
            intra_op_threads = params.intra_op_threads,
            "onnx sentiment model loaded"
        );
        Ok(OnnxModel {
            session,
            tokenizer,
            version,
            model_sha256: files.model_sha256,
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
        })
    }

    /// Returns the lowercase hex sha256 of the loaded `model.onnx`.
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// Tokenizes and scores one text, reusing the input buffers.
    fn predict_one(&mut self, text: &str) -> Result<SentimentScore, InferenceError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|error| InferenceError::Failed(format!("tokenization failed: {error}")))?;
        self.input_ids.clear();
        self.input_ids
            .extend(encoding.get_ids().iter().map(|id| i64::from(*id)));
        self.attention_mask.clear();
        self.attention_mask.extend(
            encoding
                .get_attention_mask()
                .iter()
                .map(|bit| i64::from(*bit)),
        );
        let shape = [1, self.input_ids.len()];
        let input_ids = TensorRef::from_array_view((shape, self.input_ids.as_slice()))
            .map_err(|error| failed("cannot build input_ids", &error))?;
        let attention_mask = TensorRef::from_array_view((shape, self.attention_mask.as_slice()))
            .map_err(|error| failed("cannot build attention_mask", &error))?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_IDS => input_ids, ATTENTION_MASK => attention_mask])
            .map_err(|error| failed("onnx runtime run failed", &error))?;
        let Some(logits_value) = outputs.get(LOGITS) else {
            return Err(InferenceError::Failed(format!(
                "the model has no `{LOGITS}` output"
            )));
        };
        let (logits_shape, logits) = logits_value
            .try_extract_tensor::<f32>()
            .map_err(|error| failed("cannot read logits", &error))?;
        let [negative_logit, positive_logit] = logits else {
            return Err(InferenceError::Failed(format!(
                "logits have shape {:?}, expected [1, 2]",
                &**logits_shape
            )));
        };
        Ok(sentiment_score(
            *negative_logit,
            *positive_logit,
            &self.version,
        ))
    }
}

impl SentimentModel for OnnxModel {
    fn engine(&self) -> &str {
        ONNX_ENGINE
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
        texts.iter().map(|text| self.predict_one(text)).collect()
    }
}

/// Maps one row of logits to a score: probabilities by softmax, label by the likelier class.
fn sentiment_score(
    negative_logit: f32,
    positive_logit: f32,
    model_version: &str,
) -> SentimentScore {
    let (negative_probability, positive_probability) = softmax_pair(negative_logit, positive_logit);
    let label = if positive_probability >= 0.5 {
        SentimentLabel::Positive
    } else {
        SentimentLabel::Negative
    };
    SentimentScore {
        label,
        score: positive_probability - negative_probability,
        confidence: positive_probability.max(negative_probability),
        positive_probability,
        engine: ONNX_ENGINE.to_owned(),
        model_version: model_version.to_owned(),
    }
}

/// Returns `(p(negative), p(positive))`, stable for logits of any size.
fn softmax_pair(negative_logit: f32, positive_logit: f32) -> (f32, f32) {
    let max_logit = negative_logit.max(positive_logit);
    let negative_weight = (negative_logit - max_logit).exp();
    let positive_weight = (positive_logit - max_logit).exp();
    let total = negative_weight + positive_weight;
    (negative_weight / total, positive_weight / total)
}

fn failed(context: &str, error: &ort::Error) -> InferenceError {
    InferenceError::Failed(format!("{context}: {error}"))
}

/// The ONNX Runtime environment of this process and the library it was loaded from.
struct OrtRuntime {
    environment: Environment,
    library_path: PathBuf,
}

/// Set by the first successful load; ONNX Runtime allows one environment per process.
static ORT_RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();

/// Serializes first loads, so two threads never both try to initialise the runtime.
static ORT_RUNTIME_INIT: Mutex<()> = Mutex::new(());

/// Returns the process's ONNX Runtime environment, loading the library at `runtime_path` on
/// first use. A failed load leaves nothing behind, so a later call with a good path succeeds.
fn runtime_environment(runtime_path: &Path) -> Result<&'static Environment, ModelLoadError> {
    let _init_guard = ORT_RUNTIME_INIT
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = ORT_RUNTIME.get() {
        if runtime.library_path != runtime_path {
            warn!(
                loaded = %runtime.library_path.display(),
                requested = %runtime_path.display(),
                "onnx runtime is already loaded in this process, reusing it"
            );
        }
        return Ok(&runtime.environment);
    }
    if !runtime_path.is_file() {
        return Err(ModelLoadError::MissingRuntime {
            path: runtime_path.to_path_buf(),
        });
    }
    let builder = ort::init_from(runtime_path).map_err(|error| ModelLoadError::Runtime {
        message: error.to_string(),
    })?;
    let environment = builder
        .with_name("bulwark")
        .with_telemetry(false)
        .build()
        .map_err(|error| ModelLoadError::Runtime {
            message: format!("cannot create the environment: {error}"),
        })?;
    info!(library = %runtime_path.display(), "onnx runtime loaded");
    let runtime = ORT_RUNTIME.get_or_init(|| OrtRuntime {
        environment,
        library_path: runtime_path.to_path_buf(),
    });
    Ok(&runtime.environment)
}

fn build_session(
    environment: &Environment,
    files: &VerifiedModelFiles,
    intra_op_threads: usize,
) -> Result<Session, ModelLoadError> {
    let runtime_error = |error: ort::Error<_>| ModelLoadError::Runtime {
        message: format!("cannot configure the session: {error}"),
    };
    let mut builder = Session::builder(environment)
        .map_err(|error| ModelLoadError::Runtime {
            message: format!("cannot create a session builder: {error}"),
        })?
        .with_intra_threads(intra_op_threads)
        .map_err(runtime_error)?
        .with_inter_threads(1)
        .map_err(runtime_error)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(runtime_error)?;
    builder
        .commit_from_file(&files.model)
        .map_err(|error| ModelLoadError::Corrupt {
            file: files.model.clone(),
            message: format!("onnx runtime cannot load it: {error}"),
        })
}

/// Parses `tokenizer.json` and forces truncation at [`MAX_SEQUENCE_TOKENS`] and no padding,
/// whatever the file says.
fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelLoadError> {
    let corrupt = |message: String| ModelLoadError::Corrupt {
        file: path.to_path_buf(),
        message,
    };
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|error| corrupt(format!("the tokenizer cannot parse it: {error}")))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_SEQUENCE_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|error| corrupt(format!("cannot truncate at {MAX_SEQUENCE_TOKENS}: {error}")))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// The part of `config.json` the loader relies on.
#[derive(Debug, Deserialize)]
struct ModelConfig {
    id2label: HashMap<String, String>,
}

/// Checks that logit 0 is negative and logit 1 positive, as [`OnnxModel::predict`] assumes.
fn check_label_order(config_path: &Path) -> Result<(), ModelLoadError> {
    let corrupt = |message: String| ModelLoadError::Corrupt {
        file: config_path.to_path_buf(),
        message,
    };
    let text =
        std::fs::read_to_string(config_path).map_err(|source| ModelLoadError::Unreadable {
            file: config_path.to_path_buf(),
            source,
        })?;
    let config: ModelConfig =
        serde_json::from_str(&text).map_err(|error| corrupt(format!("invalid json: {error}")))?;
    let label_of = |index: &str| config.id2label.get(index).map(String::as_str);
    if label_of("0") != Some("negative") || label_of("1") != Some("positive") {
        return Err(corrupt(format!(
            "id2label must map 0 to negative and 1 to positive, it is {:?}",
            config.id2label
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the softmax sums to one, favours the larger logit, and stays finite for logits
    /// far outside what `exp` can hold.
    #[test]
    fn softmax_pair_is_a_stable_distribution() {
        let (negative, positive) = softmax_pair(0.0, 0.0);
        assert_eq!((negative, positive), (0.5, 0.5));
        let (negative, positive) = softmax_pair(-1.0, 2.0);
        assert!((negative + positive - 1.0).abs() < 1e-6);
        assert!((positive - 0.952_574_1).abs() < 1e-6, "{positive}");
        let (negative, positive) = softmax_pair(1000.0, -1000.0);
        assert_eq!((negative, positive), (1.0, 0.0));
    }

    /// Proves a tie is labeled positive (`p >= 0.5`), and score, confidence and the reported
    /// identity follow from the logits as `SentimentScore` documents.
    #[test]
    fn sentiment_score_derives_every_field_from_the_logits() {
        let tie = sentiment_score(0.3, 0.3, "v1");
        assert_eq!(tie.label, SentimentLabel::Positive);
        assert_eq!((tie.score, tie.confidence), (0.0, 0.5));
        let negative = sentiment_score(2.0, -1.0, "v1");
        assert_eq!(negative.label, SentimentLabel::Negative);
        assert!((negative.positive_probability - 0.047_425_87).abs() < 1e-6);
        assert!((negative.score + 0.905_148_3).abs() < 1e-6);
        assert!((negative.confidence - 0.952_574_1).abs() < 1e-6);
        assert_eq!(negative.engine, ONNX_ENGINE);
        assert_eq!(negative.model_version, "v1");
    }
}
