//! API keys for Bulwark's HTTP API: random 256-bit `bwk_…` tokens stored only as a keyed
//! digest (HMAC-SHA-256 under a server secret), with scopes, expiry and rotation; the cache
//! every request is checked against; daily provider-call budgets; and token-bucket rate limits.
//!
//! The API crate calls [`Authenticator::verify`] once per request and [`RateLimiters`] per key
//! and per client IP; the CLI manages keys with the same [`Authenticator`] straight on the
//! database.
//!
//! # Layout
//! - `scope`: [`Scope`] and [`Scopes`] (`read`, `submit`, `operate`, `admin`).
//! - `token`: token generation and format, and [`KeyDigester`], the keyed digest.
//! - `authenticator`: [`Authenticator`]: verify, create, list, revoke, rotate, budgets, cache.
//! - `limits`: [`RateLimiters`], the token buckets, and their [`RateDecision`]s.
//! - `metrics`: metric names and events.

mod authenticator;
mod limits;
pub mod metrics;
mod scope;
mod token;

pub use authenticator::{
    ApiKey, AuthError, AuthFailure, AuthParams, Authenticator, BudgetCharge, IssuedKey, NewKey,
    Principal, utc_day,
};
pub use limits::{RateDecision, RateGroup, RateLimiters};
pub use scope::{Scope, Scopes};
pub use token::{KeyDigester, TOKEN_PREFIX, generate_token, is_token_shaped, visible_prefix};
