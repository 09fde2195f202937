//! The configuration files the container image and the Kubernetes manifests ship, loaded by
//! the real loader with their secrets mounted as files: they must start a node.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use bulwark_config::{ConfigSources, load};

/// Proves both shipped configs load, with the database URL and the admin key read from
/// mounted files (`DATABASE_URL_FILE`, `BULWARK_BOOTSTRAP_ADMIN_KEY_FILE`), listen on every
/// interface, keep the shutdown deadline below the orchestrators' 30 s grace, and point the
/// sentiment engine at the model and runtime the image carries.
#[test]
fn shipped_configs_load_with_secrets_from_files() {
    let database_url = common::write_secret_file("postgres://bulwark:hunter2@postgres/bulwark\n");
    let admin_key = common::write_secret_file("bwk_ShippedConfigTestKey0123456789abcdefghijk\n");
    let env = HashMap::from([
        ("DATABASE_URL_FILE".to_owned(), database_url),
        ("BULWARK_BOOTSTRAP_ADMIN_KEY_FILE".to_owned(), admin_key),
    ]);
    for file in [
        "compose/bulwark.container.toml",
        "deploy/kubernetes/base/bulwark.toml",
    ] {
        let config = load(&ConfigSources {
            explicit_file: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file)),
            env: env.clone(),
        })
        .unwrap_or_else(|error| panic!("{file}: {error}"));
        assert_eq!(config.http.addr, "0.0.0.0:8080", "{file}");
        assert_eq!(
            config.database.url.expose(),
            "postgres://bulwark:hunter2@postgres/bulwark",
            "{file}"
        );
        assert!(config.shutdown.timeout_ms < 30_000, "{file}");
        assert_eq!(
            config.sentiment.model_dir.as_deref(),
            Some("/opt/bulwark/models/sentiment-minilm-sst2"),
            "{file}"
        );
        assert_eq!(
            config.sentiment.runtime_path.as_deref(),
            Some("/opt/bulwark/lib/libonnxruntime.so.1.31.1"),
            "{file}"
        );
        let admin_key = config
            .auth
            .bootstrap_admin_key
            .as_ref()
            .expect("the admin key is read from the environment")
            .resolve_if_set(&env)
            .unwrap();
        assert_eq!(
            admin_key.as_deref(),
            Some("bwk_ShippedConfigTestKey0123456789abcdefghijk"),
            "{file}"
        );
    }
}

/// Proves the Kubernetes config refuses to start without a database URL, naming what to set,
/// instead of falling back to a SQLite file inside a pod that other pods cannot share.
#[test]
fn the_kubernetes_config_needs_a_database_url() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/bulwark.toml");
    let error = load(&ConfigSources {
        explicit_file: Some(file),
        env: HashMap::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("database.url"), "{error}");
    assert!(error.contains("DATABASE_URL_FILE"), "{error}");
}
