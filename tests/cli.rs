//! The command line of the real binary: configuration errors, `config check`, `migrate`.

use std::process::{Command, Output};

fn bulwark(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("BULWARK_HTTP_ADDR");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("bulwark runs")
}

/// Proves a bad value or an unknown key stops the start with exit code 2 and names the key.
#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let cases = [
        ("BULWARK_HTTP_ADDR", "nowhere", "http.addr"),
        ("BULWARK__JOBS__CONCURRENCY", "0", "jobs.concurrency"),
        ("BULWARK__JOBS__CONCURENCY", "4", "jobs.concurency"),
        ("DATABASE_URL", "mysql://localhost/db", "database.url"),
    ];
    for (variable, value, key) in cases {
        let output = bulwark(&["serve"], &[(variable, value)]);
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{variable}={value}: {stderr}");
    }
    let missing = bulwark(&["--config", "/nonexistent/bulwark.toml", "serve"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    // Kind names hold dots, so per-kind defaults are set in the file.
    let files = [
        (
            "[jobs.kinds.\"video.render\"]\npriority = 3\n",
            "jobs.kinds.video.render",
            "unknown job kind",
        ),
        (
            "[jobs.kinds.\"audit.run\"]\npriority = 12\n",
            "jobs.kinds.audit.run.priority",
            "0 to 9",
        ),
        (
            "[jobs.kinds.\"audit.run\"]\nmax_running = 0\n",
            "jobs.kinds.audit.run.max_running",
            "greater than 0",
        ),
        (
            "[jobs.kinds.\"audit.run\"]\nmax_starts_per_second = -1.0\n",
            "jobs.kinds.audit.run.max_starts_per_second",
            "0.001 to 100000",
        ),
    ];
    for (index, (text, key, reason)) in files.into_iter().enumerate() {
        let path = std::env::temp_dir().join(format!(
            "bulwark-cli-kinds-{}-{index}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("config written");
        let output = bulwark(&["--config", path.to_str().unwrap(), "serve"], &[]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key) && stderr.contains(reason),
            "{text}: {stderr}"
        );
    }
}

/// Proves `config check` prints the effective configuration with the password redacted.
#[test]
fn config_check_redacts_secrets() {
    let output = bulwark(
        &["config", "check"],
        &[
            ("DATABASE_URL", "postgres://app:hunter2@db.internal/jobs"),
            ("BULWARK__JOBS__CONCURRENCY", "3"),
        ],
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("postgres://app:***@db.internal/jobs"),
        "{stdout}"
    );
    assert!(stdout.contains("concurrency = 3"), "{stdout}");
    assert!(!stdout.contains("hunter2"));
}

/// Proves `migrate` creates the schema of a new SQLite database and can run again.
#[test]
fn migrate_is_repeatable() {
    let dir = std::env::temp_dir().join(format!("bulwark-cli-{}", std::process::id()));
    let url = format!("sqlite://{}", dir.join("nested/bulwark.db").display());
    for _ in 0..2 {
        let output = bulwark(
            &["migrate"],
            &[("DATABASE_URL", &url), ("BULWARK_LOG", "warn")],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    }
    assert!(dir.join("nested/bulwark.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
