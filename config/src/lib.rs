//! Bulwark's configuration: one typed tree, built from defaults in code, then a TOML file, then
//! environment overrides, and validated by a pure function.
//!
//! # Layout
//! - `model`: the typed tree ([`Config`] and its sections), with defaults in code.
//! - `load`: [`load`] merges file and environment into the tree; [`ConfigError`] names the key.
//! - `auth`: [`AuthConfig`], the `[auth]` section: API keys, open endpoints, rate limits.
//! - `amqp`: [`AmqpConfig`], the `[amqp]` section (RabbitMQ), and its validation.
//! - `http`: [`TlsConfig`] (`[http.tls]`) and the checks of the CORS allow-list.
//! - `providers`: [`ProvidersConfig`], the `[providers.<name>]` sections.
//! - `secret`: [`SecretRef`] (a secret in a variable or a file, `<VAR>_FILE` included) and
//!   [`SecretUrl`], a URL whose password never reaches `Debug`, logs or `config check`.
//! - `incidents`: [`IncidentsConfig`], [`ChaosConfig`] (refused without the `chaos` feature) and
//!   [`OpsConfig`].

mod amqp;
mod audits;
mod auth;
mod http;
mod incidents;
mod load;
mod model;
mod providers;
mod scheduling;
mod secret;

pub use amqp::{MAX_MESSAGE_BYTES_CEILING, QueueOverflow};
pub use audits::AuditsConfig;
pub use auth::{AuthConfig, OPEN_ENDPOINT_GROUPS, RateLimit, RateLimitsConfig};
pub use http::{DEFAULT_HSTS_MAX_AGE_SECS, TlsConfig};
pub use incidents::{ChaosConfig, IncidentsConfig, OpsConfig};
pub use load::{ConfigError, ConfigSources, DEFAULT_CONFIG_PATH, load};
pub use model::{
    AmqpConfig, Config, DatabaseConfig, HttpConfig, JobsConfig, KindConfig, LogFormat,
    OtlpProtocol, SentimentConfig, SentimentEngine, ShutdownConfig, SupervisionConfig,
    TelemetryConfig,
};
pub use providers::{
    DEFAULT_MAX_RESPONSE_BYTES, ProviderConfig, ProviderKind, ProvidersConfig,
    SimulatedFaultsConfig, validate_providers,
};
pub use scheduling::{DeadLetterConfig, RetentionConfig, SchedulerConfig};
pub use secret::{FILE_VARIABLE_SUFFIX, SecretRef, SecretUrl, env_or_file};
