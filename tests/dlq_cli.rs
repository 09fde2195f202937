//! `bulwark dlq …` on the real binary against a running node, and against no node at all.

mod common;

use std::process::Command;

use bulwark_store::testsuite::TestBackend;
use common::TestService;
use serde_json::Value;

fn dlq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("dlq")
        .args(args)
        .env("BULWARK_LOG", "error")
        .env("BULWARK_API_KEY", common::TEST_ADMIN_KEY)
        .output()
        .expect("bulwark runs")
}

/// Proves the CLI mirrors the API: `stats` and `list` print JSON from the node, a refused
/// operation (purge with an empty filter) exits 1 naming the field, and an unreachable node
/// is a clear error, not a hang or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cli_talks_to_a_node_over_http() {
    let service = TestService::start_with(TestBackend::Sqlite, |config| {
        config.auth.bootstrap_admin_key = Some(bulwark_config::SecretRef {
            env: None,
            file: Some(common::write_secret_file(common::TEST_ADMIN_KEY)),
        });
    })
    .await;
    let url = service.base_url.clone();
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || dlq(&["stats", "--url", &url])
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: Value = serde_json::from_slice(&output.stdout).expect("stats are JSON");
    assert_eq!(stats["depth"], 0);

    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || dlq(&["list", "--status", "parked", "--url", &url])
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(list["dead_letters"].as_array().unwrap().is_empty());

    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || dlq(&["purge", "--url", &url])
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("all:"),
        "{stderr}"
    );

    let output = tokio::task::spawn_blocking(|| dlq(&["stats", "--url", "http://127.0.0.1:9"]))
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach bulwark at http://127.0.0.1:9"),
        "{stderr}"
    );
}
