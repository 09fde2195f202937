//! The command line of the real `bulwark-bench` binary: `eval` on labeled data.

use std::process::{Command, Output};

fn bulwark_bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulwark-bench"));
    // From the workspace root, as `make` runs it: the model and runtime are found from there.
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("BULWARK_HTTP_ADDR");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("bulwark-bench runs")
}

/// Proves `bulwark-bench eval` reports accuracy per engine on labeled data, and fails clearly
/// on a bad file.
#[test]
fn eval_reports_accuracy() {
    let dir = std::env::temp_dir().join(format!("bulwark-bench-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("tiny.txt");
    std::fs::write(
        &data,
        "1 a wonderful , moving film .\n0 a dull , lifeless mess .\n",
    )
    .unwrap();
    let data_arg = data.to_str().unwrap();
    for engine in ["onnx", "lexicon", "ensemble"] {
        let output = bulwark_bench(
            &["eval", "--data", data_arg, "--engine", engine],
            &[("BULWARK_LOG", "warn")],
        );
        assert!(
            output.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["count"], 2);
        assert_eq!(report["accuracy"], 1.0, "{engine}: {report}");
    }
    std::fs::write(&data, "this line has no label\n").unwrap();
    let output = bulwark_bench(&["eval", "--data", data_arg], &[("BULWARK_LOG", "warn")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tiny.txt:1: label must be 0 or 1"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
