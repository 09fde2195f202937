//! Bulwark's configuration: one typed tree, built from defaults in code, then a TOML file, then
//! environment overrides, and validated by a pure function.
//!
//! # Layout
//! - `model`: the typed tree ([`Config`] and its sections), with defaults in code.
//! - `load`: [`load`] merges file and environment into the tree; [`ConfigError`] names the key.
//! - `secret`: [`SecretUrl`], a URL whose password never reaches `Debug`, logs or `config check`.

mod load;
mod model;
mod secret;

pub use load::{ConfigError, ConfigSources, DEFAULT_CONFIG_PATH, load};
pub use model::{
    AmqpConfig, Config, DatabaseConfig, HttpConfig, JobsConfig, LogFormat, SentimentConfig,
    SentimentEngine, ShutdownConfig, SupervisionConfig, TelemetryConfig,
};
pub use secret::SecretUrl;
