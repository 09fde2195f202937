//! Chooses the sentiment engines a node serves: the ONNX classifier with the lexicon beside it,
//! or the lexicon alone when asked for or when the model or runtime cannot be loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulwark_actors::ModelFactory;
use bulwark_config::{Config, SentimentEngine};
use bulwark_core::{MetricSpec, MetricUnit};
use bulwark_ml::{
    EngineSet, OnnxModel, OnnxModelParams, SentimentModel, VaderModel, locate_model_dir,
    locate_runtime,
};
use tracing::{error, info, warn};

pub const SENTIMENT_DEGRADED: MetricSpec = MetricSpec::gauge(
    "bulwark_sentiment_degraded",
    MetricUnit::None,
    "1 while the configured ONNX engine is not served and the lexicon answers instead, else 0",
);

/// What the workers will run, decided once at start.
#[derive(Clone)]
pub struct EnginePlan {
    pub factory: ModelFactory,
    /// E.g. `onnx+lexicon` or `lexicon`.
    pub engines: String,
    /// The model version of the primary engine, when loaded.
    pub model_version: Option<String>,
    /// Why the ONNX engine is not served although configured; `None` when all is well.
    pub degraded_reason: Option<String>,
}

impl std::fmt::Debug for EnginePlan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EnginePlan")
            .field("engines", &self.engines)
            .field("degraded_reason", &self.degraded_reason)
            .finish_non_exhaustive()
    }
}

fn lexicon_only() -> ModelFactory {
    Arc::new(|| Ok(EngineSet::new(None, Box::new(VaderModel::new()))))
}

/// Returns the ONNX model parameters from config, then the environment, then the defaults
/// under `project_root`.
pub fn onnx_params(
    config: &Config,
    env: &HashMap<String, String>,
    project_root: &Path,
) -> OnnxModelParams {
    let sentiment = &config.sentiment;
    OnnxModelParams {
        model_dir: sentiment
            .model_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| locate_model_dir(env, project_root)),
        runtime_path: sentiment
            .runtime_path
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| locate_runtime(env, project_root)),
        intra_op_threads: sentiment.intra_op_threads,
    }
}

/// Loads the ONNX model once to check it, and returns the plan. Never fails: a model or runtime
/// that cannot be loaded leaves the node on the lexicon, degraded, with the reason logged.
pub fn plan(config: &Config, env: &HashMap<String, String>, project_root: &Path) -> EnginePlan {
    if config.sentiment.engine == SentimentEngine::Lexicon {
        metrics::gauge!(SENTIMENT_DEGRADED.name).set(0.0);
        return EnginePlan {
            factory: lexicon_only(),
            engines: "lexicon".to_owned(),
            model_version: None,
            degraded_reason: None,
        };
    }
    let params = onnx_params(config, env, project_root);
    match OnnxModel::load(&params) {
        Ok(probe) => {
            let model_version = probe.version().to_owned();
            info!(model_dir = %params.model_dir.display(), model_version, checksum = probe.model_sha256(), "onnx sentiment model loaded");
            drop(probe);
            metrics::gauge!(SENTIMENT_DEGRADED.name).set(0.0);
            let factory: ModelFactory = Arc::new(move || {
                let lexicon: Box<dyn SentimentModel> = Box::new(VaderModel::new());
                match OnnxModel::load(&params) {
                    Ok(onnx) => Ok(EngineSet::new(Some(Box::new(onnx)), lexicon)),
                    Err(load_error) => {
                        error!(error = %load_error, "onnx model failed to load on worker restart, serving the lexicon");
                        metrics::gauge!(SENTIMENT_DEGRADED.name).set(1.0);
                        Ok(EngineSet::new(None, lexicon))
                    }
                }
            });
            EnginePlan {
                factory,
                engines: "onnx+lexicon".to_owned(),
                model_version: Some(model_version),
                degraded_reason: None,
            }
        }
        Err(load_error) => {
            warn!(error = %load_error, "onnx sentiment engine unavailable, serving the lexicon engine (degraded)");
            metrics::gauge!(SENTIMENT_DEGRADED.name).set(1.0);
            EnginePlan {
                factory: lexicon_only(),
                engines: "lexicon".to_owned(),
                model_version: None,
                degraded_reason: Some(load_error.to_string()),
            }
        }
    }
}
