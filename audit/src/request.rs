//! The input of an AI-visibility audit (`POST /v1/audits` and the `audit.run` job payload) and
//! its validation, with the bounds that keep one audit a bounded amount of work.

use std::collections::HashSet;

use bulwark_core::{ErrorCode, JobError, decode_payload};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::AuditSubject;

/// Longest brand, alias or competitor name, in characters.
pub const MAX_AUDIT_NAME_CHARS: usize = 200;
pub const MAX_AUDIT_ALIASES: usize = 20;
pub const MAX_AUDIT_COMPETITORS: usize = 50;
pub const MAX_AUDIT_PROMPTS: usize = 100;
/// Longest prompt, in characters.
pub const MAX_AUDIT_PROMPT_CHARS: usize = 4_000;
pub const MAX_AUDIT_PROVIDERS: usize = 10;
pub const MAX_AUDIT_SAMPLES: u32 = 10;
/// Most items (prompts × providers × samples) one audit may ask.
pub const MAX_AUDIT_ITEMS: usize = 1_000;

fn one_sample() -> u32 {
    1
}

/// What an audit asks: every prompt, of every provider, `samples_per_prompt` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRequest {
    pub brand: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub competitors: Vec<String>,
    pub prompts: Vec<String>,
    /// Configured provider names.
    pub providers: Vec<String>,
    #[serde(default = "one_sample")]
    pub samples_per_prompt: u32,
}

/// One question of an audit: a prompt asked of a provider once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditItemPlan {
    pub item_index: usize,
    pub prompt_index: usize,
    pub provider_index: usize,
    pub sample: u32,
}

/// A rule the request breaks: the field (`competitors[2]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFieldError {
    pub field: String,
    pub message: String,
}

impl AuditFieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        AuditFieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Returns a validation [`JobError`] whose message starts with `prefix` + the field.
    pub fn into_job_error(self, prefix: &str) -> JobError {
        JobError::new(
            ErrorCode::ValidationFailed,
            format!("{prefix}{}: {}", self.field, self.message),
        )
    }
}

fn check_name(field: String, name: &str) -> Result<(), AuditFieldError> {
    if name.trim().is_empty() {
        return Err(AuditFieldError::new(field, "must not be blank"));
    }
    let num_chars = name.chars().count();
    if num_chars > MAX_AUDIT_NAME_CHARS {
        return Err(AuditFieldError::new(
            field,
            format!("is {num_chars} characters long, the limit is {MAX_AUDIT_NAME_CHARS}"),
        ));
    }
    Ok(())
}

fn check_count(field: &str, count: usize, min: usize, max: usize) -> Result<(), AuditFieldError> {
    if count < min || count > max {
        return Err(AuditFieldError::new(
            field,
            format!("must hold {min} to {max} entries, got {count}"),
        ));
    }
    Ok(())
}

/// The key two names collide on: lowercase, whitespace folded.
fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl AuditRequest {
    /// Decodes a job payload, naming the offending field under `payload.`.
    pub fn from_payload(payload: &Value) -> Result<AuditRequest, JobError> {
        decode_payload(payload)
    }

    /// Checks the bounds, and that every provider is one of `known_providers` when given.
    pub fn validate(&self, known_providers_opt: Option<&[String]>) -> Result<(), AuditFieldError> {
        check_name("brand".to_owned(), &self.brand)?;
        check_count("aliases", self.aliases.len(), 0, MAX_AUDIT_ALIASES)?;
        check_count(
            "competitors",
            self.competitors.len(),
            0,
            MAX_AUDIT_COMPETITORS,
        )?;
        check_count("prompts", self.prompts.len(), 1, MAX_AUDIT_PROMPTS)?;
        check_count("providers", self.providers.len(), 1, MAX_AUDIT_PROVIDERS)?;
        let mut brand_keys = HashSet::from([name_key(&self.brand)]);
        for (index, alias) in self.aliases.iter().enumerate() {
            check_name(format!("aliases[{index}]"), alias)?;
            brand_keys.insert(name_key(alias));
        }
        let mut competitor_keys = HashSet::new();
        for (index, competitor) in self.competitors.iter().enumerate() {
            let field = format!("competitors[{index}]");
            check_name(field.clone(), competitor)?;
            let key = name_key(competitor);
            if brand_keys.contains(&key) {
                return Err(AuditFieldError::new(
                    field,
                    format!("`{competitor}` is the brand or one of its aliases"),
                ));
            }
            if !competitor_keys.insert(key) {
                return Err(AuditFieldError::new(
                    field,
                    format!("`{competitor}` is listed twice"),
                ));
            }
        }
        for (index, prompt) in self.prompts.iter().enumerate() {
            let field = format!("prompts[{index}]");
            if prompt.trim().is_empty() {
                return Err(AuditFieldError::new(field, "must not be blank"));
            }
            let num_chars = prompt.chars().count();
            if num_chars > MAX_AUDIT_PROMPT_CHARS {
                return Err(AuditFieldError::new(
                    field,
                    format!(
                        "is {num_chars} characters long, the limit is {MAX_AUDIT_PROMPT_CHARS}"
                    ),
                ));
            }
        }
        let mut seen_providers = HashSet::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let field = format!("providers[{index}]");
            if let Some(known) = known_providers_opt
                && !known.contains(provider)
            {
                let configured = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(AuditFieldError::new(
                    field,
                    format!("unknown provider `{provider}`, configured: {configured}"),
                ));
            }
            if !seen_providers.insert(provider) {
                return Err(AuditFieldError::new(
                    field,
                    format!("`{provider}` is listed twice"),
                ));
            }
        }
        if !(1..=MAX_AUDIT_SAMPLES).contains(&self.samples_per_prompt) {
            return Err(AuditFieldError::new(
                "samples_per_prompt",
                format!("must be between 1 and {MAX_AUDIT_SAMPLES}"),
            ));
        }
        let num_items = self.num_items();
        if num_items > MAX_AUDIT_ITEMS {
            return Err(AuditFieldError::new(
                "prompts",
                format!(
                    "prompts × providers × samples_per_prompt is {num_items}, the limit is \
                     {MAX_AUDIT_ITEMS}"
                ),
            ));
        }
        Ok(())
    }

    /// Returns prompts × providers × samples.
    pub fn num_items(&self) -> usize {
        self.prompts.len() * self.providers.len() * self.samples_per_prompt as usize
    }

    /// Returns every item, numbered prompt-major, then provider, then sample.
    pub fn plan(&self) -> Vec<AuditItemPlan> {
        let mut items = Vec::with_capacity(self.num_items());
        for prompt_index in 0..self.prompts.len() {
            for provider_index in 0..self.providers.len() {
                for sample in 0..self.samples_per_prompt {
                    items.push(AuditItemPlan {
                        item_index: items.len(),
                        prompt_index,
                        provider_index,
                        sample,
                    });
                }
            }
        }
        items
    }

    /// Returns what the analysis looks for.
    pub fn subject(&self) -> AuditSubject {
        AuditSubject {
            brand: self.brand.clone(),
            aliases: self.aliases.clone(),
            competitors: self.competitors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request() -> AuditRequest {
        AuditRequest {
            brand: "Acme".to_owned(),
            aliases: vec!["Acme Inc".to_owned()],
            competitors: vec!["Globex".to_owned(), "Initech".to_owned()],
            prompts: vec!["best crm?".to_owned(), "cheapest crm?".to_owned()],
            providers: vec!["sim".to_owned(), "openai".to_owned()],
            samples_per_prompt: 3,
        }
    }

    fn known() -> Vec<String> {
        vec!["sim".to_owned(), "openai".to_owned()]
    }

    /// Proves a good request passes and the plan covers prompt × provider × sample once each.
    #[test]
    fn plan_covers_every_item() {
        let request = request();
        request.validate(Some(&known())).unwrap();
        let plan = request.plan();
        assert_eq!(plan.len(), 12);
        assert_eq!(request.num_items(), 12);
        let last = plan[11];
        assert_eq!(
            (
                last.item_index,
                last.prompt_index,
                last.provider_index,
                last.sample
            ),
            (11, 1, 1, 2)
        );
        let distinct: HashSet<(usize, usize, u32)> = plan
            .iter()
            .map(|item| (item.prompt_index, item.provider_index, item.sample))
            .collect();
        assert_eq!(distinct.len(), 12);
    }

    /// Breaks one rule of a good request.
    type BreakRule = Box<dyn Fn(&mut AuditRequest)>;

    /// Proves every broken rule names its field.
    #[test]
    fn validation_names_fields() {
        let cases: Vec<(BreakRule, &str)> = vec![
            (Box::new(|r| r.brand = "  ".to_owned()), "brand"),
            (Box::new(|r| r.brand = "x".repeat(201)), "brand"),
            (Box::new(|r| r.aliases = vec![String::new()]), "aliases[0]"),
            (
                Box::new(|r| r.aliases = vec!["a".to_owned(); 21]),
                "aliases",
            ),
            (
                Box::new(|r| r.competitors[1] = "acme  INC".to_owned()),
                "competitors[1]",
            ),
            (
                Box::new(|r| r.competitors[1] = "GLOBEX".to_owned()),
                "competitors[1]",
            ),
            (Box::new(|r| r.prompts.clear()), "prompts"),
            (Box::new(|r| r.prompts[1] = "\n".to_owned()), "prompts[1]"),
            (Box::new(|r| r.prompts[0] = "p".repeat(4_001)), "prompts[0]"),
            (Box::new(|r| r.providers = vec![]), "providers"),
            (
                Box::new(|r| r.providers[1] = "gemini".to_owned()),
                "providers[1]",
            ),
            (
                Box::new(|r| r.providers[1] = "sim".to_owned()),
                "providers[1]",
            ),
            (Box::new(|r| r.samples_per_prompt = 0), "samples_per_prompt"),
            (
                Box::new(|r| r.samples_per_prompt = 11),
                "samples_per_prompt",
            ),
            (
                Box::new(|r| {
                    r.prompts = vec!["q".to_owned(); 100];
                    r.samples_per_prompt = 10;
                }),
                "prompts",
            ),
        ];
        for (break_rule, field) in cases {
            let mut request = request();
            break_rule(&mut request);
            let error = request.validate(Some(&known())).unwrap_err();
            assert_eq!(error.field, field, "{}", error.message);
        }
        let unknown = {
            let mut request = request();
            request.providers[1] = "gemini".to_owned();
            request.validate(Some(&known())).unwrap_err()
        };
        assert!(
            unknown.message.contains("sim, openai"),
            "{}",
            unknown.message
        );
        let job_error = unknown.into_job_error("payload.");
        assert!(job_error.message.starts_with("payload.providers[1]: "));
        assert!(!job_error.is_retryable());
    }

    /// Proves payload decoding names unknown and mistyped fields and defaults the samples.
    #[test]
    fn payload_decoding() {
        let decoded = AuditRequest::from_payload(&json!({
            "brand": "Acme", "prompts": ["q"], "providers": ["sim"]
        }))
        .unwrap();
        assert_eq!(decoded.samples_per_prompt, 1);
        assert!(decoded.aliases.is_empty());
        let unknown = AuditRequest::from_payload(&json!({
            "brand": "Acme", "prompts": ["q"], "providers": ["sim"], "colour": 1
        }))
        .unwrap_err();
        assert!(
            unknown.message.starts_with("payload"),
            "{}",
            unknown.message
        );
        let mistyped = AuditRequest::from_payload(&json!({
            "brand": "Acme", "prompts": [1], "providers": ["sim"]
        }))
        .unwrap_err();
        assert!(
            mistyped.message.starts_with("payload.prompts[0]:"),
            "{}",
            mistyped.message
        );
    }
}
