//! `bulwark-bench eval`: accuracy, per-class precision and recall, and throughput of one
//! sentiment engine on labeled data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_config::Config;
use bulwark_ml::{
    EngineSet, EvalReport, OnnxModel, ScoringOptions, SentimentModel, Strategy, StrategyModel,
    VaderModel, read_labeled,
};
use clap::{Args, ValueEnum};

/// The engine `bulwark-bench eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalEngine {
    Onnx,
    Lexicon,
    Ensemble,
}

/// Options of `bulwark-bench eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Lines of `label<space>text` (SST-2 format: 0 negative, 1 positive).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = EvalEngine::Onnx)]
    pub engine: EvalEngine,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// Scores every labeled example of `args.data` with the chosen engine, loaded as a node would
/// load it from `config`.
pub fn evaluate(config: &Config, args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let data: &Path = &args.data;
    let examples =
        read_labeled(data).with_context(|| format!("failed to read {}", data.display()))?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let project_root = std::env::current_dir().context("failed to read the working directory")?;
    let load_onnx = || -> anyhow::Result<OnnxModel> {
        let params = bulwark::engines::onnx_params(config, &env, &project_root);
        OnnxModel::load(&params).context("failed to load the onnx model")
    };
    let mut model: Box<dyn SentimentModel> = match args.engine {
        EvalEngine::Lexicon => Box::new(VaderModel::new()),
        EvalEngine::Onnx => Box::new(load_onnx()?),
        EvalEngine::Ensemble => {
            let engines = EngineSet::new(Some(Box::new(load_onnx()?)), Box::new(VaderModel::new()));
            let options = ScoringOptions {
                strategy: Strategy::Ensemble,
                neutral_threshold: 0.0,
                primary_weight: config.sentiment.ensemble_onnx_weight,
            };
            Box::new(StrategyModel::new(engines, options))
        }
    };
    bulwark_ml::evaluate(model.as_mut(), &examples, args.batch_size).context("evaluation failed")
}
