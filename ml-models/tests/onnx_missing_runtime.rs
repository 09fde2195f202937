//! Loading the ONNX model when the ONNX Runtime library is absent.
//!
//! ONNX Runtime is loaded once per process and then reused, so this test has a file, and a
//! process, of its own: in `tests/onnx.rs` an earlier test would already have loaded it.

use std::collections::HashMap;
use std::path::Path;

use bulwark_ml::{ModelLoadError, OnnxModel, OnnxModelParams, locate_model_dir};

/// Proves a runtime path with no library behind it is `MissingRuntime`, naming the path and
/// the fix, and that the model files are not to blame (they are present and intact).
#[test]
fn missing_runtime_is_missing_runtime() {
    let project_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ml-models sits inside the workspace");
    let env: HashMap<String, String> = std::env::vars().collect();
    let absent = tempfile::tempdir().unwrap();
    let runtime_path = absent.path().join("libonnxruntime.so.1.31.1");
    let params = OnnxModelParams {
        model_dir: locate_model_dir(&env, project_root),
        runtime_path: runtime_path.clone(),
        intra_op_threads: 1,
    };
    let error = OnnxModel::load(&params).unwrap_err();
    let ModelLoadError::MissingRuntime { path } = &error else {
        panic!("expected MissingRuntime, got {error:?}");
    };
    assert_eq!(path, &runtime_path);
    let message = error.to_string();
    assert!(message.contains("make runtime"), "{message}");
    assert!(message.contains("ORT_DYLIB_PATH"), "{message}");
    assert!(!error.is_retryable());
}
