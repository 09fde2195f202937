//! Prints the accuracy and throughput of the ONNX sentiment model on a labeled file, as JSON.
//!
//! ```sh
//! make runtime model
//! cargo run --release -p bulwark-ml --example eval_sst2 -- [DATA] [BATCH_SIZE] [THREADS]
//! ```
//!
//! `DATA` defaults to the SST-2 dev set beside the project (`../shared/data/sst2/dev.txt`),
//! `BATCH_SIZE` to 32 and `THREADS` (intra-op threads) to 2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_ml::{
    OnnxModel, OnnxModelParams, evaluate, locate_model_dir, locate_runtime, read_labeled,
};

fn main() -> anyhow::Result<()> {
    let project_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("ml-models sits inside the workspace")?
        .to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data_path = args.first().map_or_else(
        || project_root.join("../shared/data/sst2/dev.txt"),
        PathBuf::from,
    );
    let batch_size = args
        .get(1)
        .map_or(Ok(32), |arg| arg.parse())
        .context("BATCH_SIZE must be a number")?;
    let intra_op_threads = args
        .get(2)
        .map_or(Ok(2), |arg| arg.parse())
        .context("THREADS must be a number")?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let params = OnnxModelParams {
        model_dir: locate_model_dir(&env, &project_root),
        runtime_path: locate_runtime(&env, &project_root),
        intra_op_threads,
    };
    let mut model = OnnxModel::load(&params).context("failed to load the onnx model")?;
    let data = read_labeled(&data_path).context("failed to read the labeled data")?;
    let report = evaluate(&mut model, &data, batch_size).context("failed to evaluate")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
