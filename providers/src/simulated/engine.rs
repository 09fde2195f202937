use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::rng::{SplitMix64, fnv1a};
use crate::{CompletionRequest, Usage};

/// Brands the engine talks about when a prompt names none.
pub const DEFAULT_BRANDS: [&str; 5] = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"];

/// Capitalised words that are not brands.
const NOT_BRANDS: &[&str] = &[
    "I", "A", "An", "The", "What", "Which", "Who", "How", "Why", "When", "Where", "Is", "Are",
    "Do", "Does", "Can", "Should", "Would", "Could", "Please", "List", "Name", "Compare", "Tell",
    "Give", "Best", "Top", "In", "For", "And", "Or", "Of", "To", "With", "My", "Our", "We", "You",
    "AI", "OK", // Category words that prompts capitalise.
    "CRM", "ERP", "SaaS", "API", "SEO", "UI", "UX", "LLM", "VPN", "CMS",
];

/// How the engine speaks of one brand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    Positive,
    Neutral,
    Negative,
}

/// What the simulated engine is started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedEngineParams {
    /// Mixed into every answer: two engines with different seeds answer differently.
    pub seed: u64,
    /// Brands to speak of besides the capitalised names found in the prompt.
    pub brands: Vec<String>,
    /// The model name reported in answers.
    pub model: String,
    /// Probability that a known brand is mentioned in an answer.
    pub mention_rate: f64,
}

impl Default for SimulatedEngineParams {
    fn default() -> Self {
        SimulatedEngineParams {
            seed: 7,
            brands: DEFAULT_BRANDS
                .iter()
                .map(|brand| (*brand).to_owned())
                .collect(),
            model: "bulwark-sim-1".to_owned(),
            mention_rate: 0.7,
        }
    }
}

/// One generated answer, with what it says of each brand (for tests and the demo).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedAnswer {
    pub text: String,
    /// Brands mentioned, in order of first mention, with their tone.
    pub mentions: Vec<(String, Tone)>,
    pub is_list: bool,
    pub usage: Usage,
}

/// Answers prompts deterministically: the same seed, request seed, system prompt and prompt
/// always give the same answer. Answers mention some brands and omit others, in positive,
/// neutral or negative tones, and about half are numbered lists so ranks can be measured.
#[derive(Debug, Clone)]
pub struct SimulatedEngine {
    params: SimulatedEngineParams,
}

const POSITIVE: [&str; 4] = [
    "{b} is widely praised for its reliability and excellent support.",
    "{b} stands out as a great choice, with a fast and polished experience.",
    "Many reviewers love {b} for its outstanding value.",
    "{b} is the best option for most teams and users recommend it highly.",
];
const NEUTRAL: [&str; 4] = [
    "{b} is a common option that covers the basic features.",
    "{b} offers a standard plan and is used by many teams.",
    "{b} is another provider in this market.",
    "{b} has a free tier and paid plans.",
];
const NEGATIVE: [&str; 4] = [
    "{b} is often criticized for slow support and frequent outages.",
    "{b} has a confusing interface and users report poor value.",
    "Several reviews call {b} unreliable and overpriced.",
    "{b} is a disappointing choice because of its bugs and bad service.",
];

impl SimulatedEngine {
    pub fn new(params: SimulatedEngineParams) -> Self {
        SimulatedEngine { params }
    }

    pub fn model(&self) -> &str {
        &self.params.model
    }

    /// Returns the brands an answer to `prompt` may speak of: capitalised names in the prompt
    /// (not at the start of a sentence), then the configured brands.
    pub fn candidate_brands(&self, prompt: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut brands = Vec::new();
        let mut sentence_start = true;
        for raw_word in prompt.split_whitespace() {
            let word = raw_word.trim_matches(|c: char| !c.is_alphanumeric());
            let starts_upper = word.chars().next().is_some_and(char::is_uppercase);
            if starts_upper
                && !sentence_start
                && word.len() >= 2
                && !NOT_BRANDS.contains(&word)
                && seen.insert(word.to_lowercase())
            {
                brands.push(word.to_owned());
            }
            sentence_start = raw_word.ends_with(['.', '?', '!', ':']);
        }
        for brand in &self.params.brands {
            if seen.insert(brand.to_lowercase()) {
                brands.push(brand.clone());
            }
        }
        brands.truncate(8);
        brands
    }

    /// Generates the answer to `request`.
    pub fn answer(&self, request: &CompletionRequest) -> SimulatedAnswer {
        let seed = fnv1a(&[
            &self.params.seed.to_le_bytes(),
            &request.seed.unwrap_or(0).to_le_bytes(),
            request.system.as_deref().unwrap_or("").as_bytes(),
            request.prompt.as_bytes(),
        ]);
        let mut rng = SplitMix64::new(seed);
        let mut brands = self.candidate_brands(&request.prompt);
        // Fisher-Yates, so ranks differ between answers.
        for index in (1..brands.len()).rev() {
            let other = rng.below(index + 1);
            brands.swap(index, other);
        }
        let mut mentions = Vec::new();
        for brand in brands {
            if rng.next_f64() < self.params.mention_rate {
                let roll = rng.next_f64();
                let tone = if roll < 0.45 {
                    Tone::Positive
                } else if roll < 0.8 {
                    Tone::Neutral
                } else {
                    Tone::Negative
                };
                mentions.push((brand, tone));
            }
        }
        let is_list = !mentions.is_empty() && rng.next_f64() < 0.5;
        let mut text = String::new();
        if mentions.is_empty() {
            text.push_str(
                "There is no single best answer: it depends on your budget, your team and the \
                 features you need. Compare a few options on a trial before you decide.",
            );
        } else if is_list {
            text.push_str("Here are the options worth considering:\n");
            for (rank, (brand, tone)) in mentions.iter().enumerate() {
                let sentence = pick_sentence(&mut rng, *tone, brand);
                text.push_str(&format!("{}. {brand}: {sentence}\n", rank + 1));
            }
            text.push_str("Try the ones that fit your budget first.");
        } else {
            text.push_str("It depends on what you need. ");
            for (brand, tone) in &mentions {
                text.push_str(&pick_sentence(&mut rng, *tone, brand));
                text.push(' ');
            }
            text.push_str("Compare them on a trial before you decide.");
        }
        let input_chars = request.prompt.len() + request.system.as_ref().map_or(0, String::len);
        let mut output_tokens = u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX);
        if let Some(max_tokens) = request.max_tokens {
            output_tokens = output_tokens.min(max_tokens);
        }
        SimulatedAnswer {
            usage: Usage {
                input_tokens: u32::try_from(input_chars.div_ceil(4)).unwrap_or(u32::MAX),
                output_tokens,
            },
            text,
            mentions,
            is_list,
        }
    }
}

fn pick_sentence(rng: &mut SplitMix64, tone: Tone, brand: &str) -> String {
    let templates = match tone {
        Tone::Positive => &POSITIVE,
        Tone::Neutral => &NEUTRAL,
        Tone::Negative => &NEGATIVE,
    };
    templates[rng.below(templates.len())].replace("{b}", brand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> SimulatedEngine {
        SimulatedEngine::new(SimulatedEngineParams::default())
    }

    /// Proves answers are deterministic per seed and vary with the request seed.
    #[test]
    fn answers_are_deterministic() {
        let engine = engine();
        let mut request = CompletionRequest::new("Which CRM is best: Salesforce or HubSpot?");
        let first = engine.answer(&request);
        assert_eq!(first, engine.answer(&request));
        let mut texts = BTreeSet::new();
        for seed in 0..20 {
            request.seed = Some(seed);
            texts.insert(engine.answer(&request).text);
        }
        assert!(texts.len() > 10, "only {} distinct answers", texts.len());
    }

    /// Proves brands come from the prompt and the configured list, and that over many seeds
    /// answers mention and omit them, in every tone, sometimes as numbered lists.
    #[test]
    fn answers_cover_mentions_tones_and_lists() {
        let engine = engine();
        let brands =
            engine.candidate_brands("Best CRM tool? Compare Salesforce, HubSpot and Zoho.");
        assert_eq!(&brands[..3], ["Salesforce", "HubSpot", "Zoho"]);
        assert!(brands.contains(&"Acme".to_owned()));
        assert!(!brands.contains(&"Compare".to_owned()));

        let mut tones = BTreeSet::new();
        let (mut num_lists, mut num_omitting_salesforce) = (0, 0);
        for seed in 0..200 {
            let mut request = CompletionRequest::new("Best CRM? Compare Salesforce and Zoho.");
            request.seed = Some(seed);
            let answer = engine.answer(&request);
            for (brand, tone) in &answer.mentions {
                assert!(answer.text.contains(brand.as_str()));
                tones.insert(format!("{tone:?}"));
            }
            if answer.is_list {
                num_lists += 1;
                assert!(answer.text.contains("\n1. "), "{}", answer.text);
            }
            if !answer.text.contains("Salesforce") {
                num_omitting_salesforce += 1;
            }
        }
        assert_eq!(tones.len(), 3);
        assert!(num_lists > 40 && num_lists < 160, "{num_lists} lists");
        assert!(num_omitting_salesforce > 20, "{num_omitting_salesforce}");
    }
}
