//! VADER (Hutto & Gilbert, 2014), a port of the lexicon-and-rules scorer in the Python package
//! `vaderSentiment` 3.3.2.
//!
//! The port follows the Python code rule for rule, quirks included, so that both give the same
//! numbers; `tests/fixtures/vader_golden.jsonl` (written by `tools/gen_vader_golden.py`) pins
//! that. Where the Python re-scans or re-lowercases the whole text for every word, this port does
//! the work once per text, which keeps scoring linear in the number of words.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::LazyLock;

use crate::{InferenceError, SentimentLabel, SentimentModel, SentimentScore};

const ENGINE: &str = "lexicon";
const MODEL_VERSION: &str = "vader-3.3.2";

const VADER_LEXICON_TXT: &str = include_str!("../data/vader/vader_lexicon.txt");
const EMOJI_LEXICON_TXT: &str = include_str!("../data/vader/emoji_utf8_lexicon.txt");

/// Mean intensity change caused by a booster ("very") or dampener ("barely") word.
const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
/// Mean intensity increase of an ALL-CAPS word in otherwise mixed-case text.
const C_INCR: f64 = 0.733;
/// Factor applied to a negated word's valence.
const N_SCALAR: f64 = -0.74;
/// How much a booster counts at distance 1, 2 and 3 before the word it modifies.
const BOOSTER_DISTANCE_WEIGHTS: [f64; 3] = [1.0, 0.95, 0.9];
/// Approximates the largest expected raw sum when squashing it into `[-1, 1]`.
const NORMALIZE_ALPHA: f64 = 15.0;
const MAX_COUNTED_EXCLAMATIONS: usize = 4;
const EXCLAMATION_AMPLIFIER: f64 = 0.292;
const QUESTION_AMPLIFIER: f64 = 0.18;
const MAX_QUESTION_AMPLIFIER: f64 = 0.96;
/// Compound scores at or beyond ±this are positive or negative; VADER's documented cut-off.
const LABEL_THRESHOLD: f64 = 0.05;

/// The lexicons, parsed once per process and shared by every [`VaderModel`].
static LEXICON: LazyLock<VaderLexicon> = LazyLock::new(VaderLexicon::parse);

/// The word valences and the emoji descriptions VADER scores with.
struct VaderLexicon {
    valences: HashMap<&'static str, f64>,
    /// Only single-character emoji: Python looks emoji up one code point at a time, so its
    /// multi-code-point entries (flags, skin tones, ZWJ sequences) can never match.
    emoji_descriptions: HashMap<char, &'static str>,
}

impl VaderLexicon {
    /// Parses the embedded files the way Python's `make_lex_dict` and `make_emoji_dict` do; a
    /// later duplicate entry wins.
    fn parse() -> VaderLexicon {
        let mut valences = HashMap::new();
        for (word, measure) in tab_separated_pairs(VADER_LEXICON_TXT) {
            if let Ok(valence) = measure.parse::<f64>() {
                valences.insert(word, valence);
            }
        }
        let mut emoji_descriptions = HashMap::new();
        for (emoji, description) in tab_separated_pairs(EMOJI_LEXICON_TXT) {
            let mut chars = emoji.chars();
            if let (Some(emoji_char), None) = (chars.next(), chars.next()) {
                emoji_descriptions.insert(emoji_char, description);
            }
        }
        VaderLexicon {
            valences,
            emoji_descriptions,
        }
    }

    fn valence(&self, word_lower: &str) -> Option<f64> {
        self.valences.get(word_lower).copied()
    }
}

impl fmt::Debug for VaderLexicon {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("VaderLexicon")
            .field("num_valences", &self.valences.len())
            .field("num_emoji", &self.emoji_descriptions.len())
            .finish()
    }
}

/// Yields the first two tab-separated fields of every non-empty line.
fn tab_separated_pairs(
    contents: &'static str,
) -> impl Iterator<Item = (&'static str, &'static str)> {
    contents
        .trim_end_matches('\n')
        .split('\n')
        .filter_map(|line| {
            let mut fields = line.trim_matches(is_python_whitespace).split('\t');
            Some((fields.next()?, fields.next()?))
        })
}

/// VADER's four numbers for one text, rounded as Python rounds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolarityScores {
    pub neg: f64,
    pub neu: f64,
    pub pos: f64,
    /// The normalized sum of all valences, in `[-1, 1]`, rounded to 4 decimals.
    pub compound: f64,
}

/// The VADER sentiment model: no model files, no state, cheap to create.
#[derive(Debug, Clone)]
pub struct VaderModel {
    lexicon: &'static VaderLexicon,
}

impl VaderModel {
    /// Returns a model backed by the shared lexicon, parsing it on first use.
    pub fn new() -> VaderModel {
        VaderModel { lexicon: &LEXICON }
    }

    /// Returns what `SentimentIntensityAnalyzer().polarity_scores(text)` returns in Python.
    pub fn polarity_scores(&self, text: &str) -> PolarityScores {
        let text_no_emoji = self.replace_emoji(text);
        let text = text_no_emoji.trim_matches(is_python_whitespace);
        let senti_text = SentiText::new(text);
        let rules = Rules {
            lexicon: self.lexicon,
            senti_text: &senti_text,
        };
        let mut sentiments: Vec<f64> = (0..senti_text.tokens.len())
            .map(|index| rules.token_sentiment(index))
            .collect();
        but_check(&senti_text.tokens, &mut sentiments);
        score_valence(&sentiments, text)
    }

    /// Replaces each known emoji by its description, spaced off from a preceding word.
    fn replace_emoji(&self, text: &str) -> String {
        let mut text_no_emoji = String::with_capacity(text.len());
        let mut prev_space = true;
        for character in text.chars() {
            match self.lexicon.emoji_descriptions.get(&character) {
                Some(description) => {
                    if !prev_space {
                        text_no_emoji.push(' ');
                    }
                    text_no_emoji.push_str(description);
                    prev_space = false;
                }
                None => {
                    text_no_emoji.push(character);
                    prev_space = character == ' ';
                }
            }
        }
        text_no_emoji
    }

    fn score(&self, text: &str) -> SentimentScore {
        let scores = self.polarity_scores(text);
        let compound = scores.compound;
        let label = if compound >= LABEL_THRESHOLD {
            SentimentLabel::Positive
        } else if compound <= -LABEL_THRESHOLD {
            SentimentLabel::Negative
        } else {
            SentimentLabel::Neutral
        };
        let confidence = match label {
            SentimentLabel::Neutral => scores.neu,
            SentimentLabel::Positive | SentimentLabel::Negative => compound.abs(),
        };
        SentimentScore {
            label,
            score: compound as f32,
            confidence: confidence as f32,
            positive_probability: ((compound + 1.0) / 2.0) as f32,
            engine: ENGINE.to_owned(),
            model_version: MODEL_VERSION.to_owned(),
        }
    }
}

impl Default for VaderModel {
    fn default() -> VaderModel {
        VaderModel::new()
    }
}

impl SentimentModel for VaderModel {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn version(&self) -> &str {
        MODEL_VERSION
    }

    fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
        Ok(texts.iter().map(|text| self.score(text)).collect())
    }
}

/// One whitespace-separated token, with the derived forms every rule looks at.
#[derive(Debug)]
struct Token {
    lower: String,
    is_upper: bool,
}

/// The tokens of one text and whether its capitalization is mixed (Python's `SentiText`).
#[derive(Debug)]
struct SentiText {
    tokens: Vec<Token>,
    is_cap_diff: bool,
}

impl SentiText {
    fn new(text: &str) -> SentiText {
        let tokens: Vec<Token> = text
            .split(is_python_whitespace)
            .filter(|token| !token.is_empty())
            .map(|token| {
                let word = strip_punctuation_if_word(token);
                Token {
                    lower: word.to_lowercase(),
                    is_upper: is_python_upper(word),
                }
            })
            .collect();
        let num_upper = tokens.iter().filter(|token| token.is_upper).count();
        // "differential": some, but not all, tokens are ALL CAPS
        let is_cap_diff = num_upper > 0 && num_upper < tokens.len();
        SentiText {
            tokens,
            is_cap_diff,
        }
    }
}

/// Strips ASCII punctuation from both ends, unless that leaves two characters or fewer: such a
/// token is taken to be an emoticon (":)", ":-(") and kept whole, punctuation and all.
fn strip_punctuation_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|character: char| character.is_ascii_punctuation());
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

/// Python's `str.isspace`: Rust's `char::is_whitespace` plus the ASCII separators 0x1C-0x1F.
fn is_python_whitespace(character: char) -> bool {
    character.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&character)
}

/// Python's `str.isupper`: at least one uppercase character and no lowercase or titlecase one.
fn is_python_upper(word: &str) -> bool {
    let mut has_upper = false;
    for character in word.chars() {
        if character.is_lowercase() || is_titlecase(character) {
            return false;
        }
        has_upper |= character.is_uppercase();
    }
    has_upper
}

/// The Unicode titlecase letters (category Lt), which Rust's `char` does not classify.
fn is_titlecase(character: char) -> bool {
    matches!(
        character,
        '\u{1c5}'
            | '\u{1c8}'
            | '\u{1cb}'
            | '\u{1f2}'
            | '\u{1f88}'..='\u{1f8f}'
            | '\u{1f98}'..='\u{1f9f}'
            | '\u{1fa8}'..='\u{1faf}'
            | '\u{1fbc}'
            | '\u{1fcc}'
            | '\u{1ffc}'
    )
}

/// Returns the booster (`B_INCR`) or dampener (`B_DECR`) value of one lowercase word.
fn booster_value(word_lower: &str) -> Option<f64> {
    match word_lower {
        "absolutely" | "amazingly" | "awfully" | "completely" | "considerable" | "considerably"
        | "decidedly" | "deeply" | "effing" | "enormous" | "enormously" | "entirely"
        | "especially" | "exceptional" | "exceptionally" | "extreme" | "extremely"
        | "fabulously" | "flipping" | "flippin" | "frackin" | "fracking" | "fricking"
        | "frickin" | "frigging" | "friggin" | "fully" | "fuckin" | "fucking" | "fuggin"
        | "fugging" | "greatly" | "hella" | "highly" | "hugely" | "incredible" | "incredibly"
        | "intensely" | "major" | "majorly" | "more" | "most" | "particularly" | "purely"
        | "quite" | "really" | "remarkably" | "so" | "substantially" | "thoroughly" | "total"
        | "totally" | "tremendous" | "tremendously" | "uber" | "unbelievably" | "unusually"
        | "utter" | "utterly" | "very" => Some(B_INCR),
        "almost" | "barely" | "hardly" | "kinda" | "kindof" | "kind-of" | "less" | "little"
        | "marginal" | "marginally" | "occasional" | "occasionally" | "partly" | "scarce"
        | "scarcely" | "slight" | "slightly" | "somewhat" | "sorta" | "sortof" | "sort-of" => {
            Some(B_DECR)
        }
        _ => None,
    }
}

/// Returns the booster value of a run of lowercase tokens, as Python's `n_gram in BOOSTER_DICT`
/// does for a space-joined n-gram. Tokens never hold whitespace, so only the two-word entries
/// of `BOOSTER_DICT` can match a run of two tokens, and none a run of three.
fn booster_ngram_value(words: &[&str]) -> Option<f64> {
    match words {
        [word] => booster_value(word),
        ["just", "enough"] | ["kind", "of"] | ["sort", "of"] => Some(B_DECR),
        _ => None,
    }
}

/// Returns the fixed valence of a special-case phrase (Python's `SPECIAL_CASES`). The
/// one-word entry "badass" is listed for completeness; Python never looks it up as a phrase.
fn special_case_value(words: &[&str]) -> Option<f64> {
    match words {
        ["the", "shit"] | ["the", "bomb"] | ["to", "die", "for"] => Some(3.0),
        ["bad", "ass"] | ["badass"] => Some(1.5),
        ["bus", "stop"] => Some(0.0),
        ["yeah", "right"] => Some(-2.0),
        ["kiss", "of", "death"] => Some(-1.5),
        ["beating", "heart"] => Some(3.5),
        _ => None,
    }
}

/// Python's `negated([word])` for one lowercase word: a word of its `NEGATE` list, or any word
/// holding "n't".
fn is_negation(word_lower: &str) -> bool {
    match word_lower {
        "aint" | "arent" | "cannot" | "cant" | "couldnt" | "darent" | "didnt" | "doesnt"
        | "ain't" | "aren't" | "can't" | "couldn't" | "daren't" | "didn't" | "doesn't" | "dont"
        | "hadnt" | "hasnt" | "havent" | "isnt" | "mightnt" | "mustnt" | "neither" | "don't"
        | "hadn't" | "hasn't" | "haven't" | "isn't" | "mightn't" | "mustn't" | "neednt"
        | "needn't" | "never" | "none" | "nope" | "nor" | "not" | "nothing" | "nowhere"
        | "oughtnt" | "shant" | "shouldnt" | "uhuh" | "wasnt" | "werent" | "oughtn't"
        | "shan't" | "shouldn't" | "uh-uh" | "wasn't" | "weren't" | "without" | "wont"
        | "wouldnt" | "won't" | "wouldn't" | "rarely" | "seldom" | "despite" => true,
        _ => word_lower.contains("n't"),
    }
}

/// Python's `scalar_inc_dec`: what a preceding booster adds to `valence`, caps included.
fn booster_scalar(token: &Token, valence: f64, is_cap_diff: bool) -> f64 {
    let Some(mut scalar) = booster_value(&token.lower) else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar = -scalar;
    }
    if token.is_upper && is_cap_diff {
        scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
    }
    scalar
}

/// The per-word rules of `SentimentIntensityAnalyzer`, applied to one tokenized text.
struct Rules<'a> {
    lexicon: &'a VaderLexicon,
    senti_text: &'a SentiText,
}

impl Rules<'_> {
    fn lower(&self, index: usize) -> &str {
        &self.senti_text.tokens[index].lower
    }

    fn in_lexicon(&self, index: usize) -> bool {
        self.lexicon.valence(self.lower(index)).is_some()
    }

    fn num_tokens(&self) -> usize {
        self.senti_text.tokens.len()
    }

    /// Returns the valence of the token at `index` before the "but" rule (Python's loop body in
    /// `polarity_scores` plus `sentiment_valence`). Boosters score zero themselves.
    fn token_sentiment(&self, index: usize) -> f64 {
        let word = self.lower(index);
        let is_kind_of =
            word == "kind" && index + 1 < self.num_tokens() && self.lower(index + 1) == "of";
        if booster_value(word).is_some() || is_kind_of {
            return 0.0;
        }
        let Some(base_valence) = self.lexicon.valence(word) else {
            return 0.0;
        };
        let mut valence = self.no_adjusted_valence(base_valence, index);
        if self.senti_text.tokens[index].is_upper && self.senti_text.is_cap_diff {
            valence += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        for (start_i, distance_weight) in BOOSTER_DISTANCE_WEIGHTS.into_iter().enumerate() {
            // a preceding lexicon word is not a modifier, so it is skipped with its rules
            if index <= start_i || self.in_lexicon(index - start_i - 1) {
                continue;
            }
            let modifier = &self.senti_text.tokens[index - start_i - 1];
            let scalar = booster_scalar(modifier, valence, self.senti_text.is_cap_diff);
            valence += scalar * distance_weight;
            valence = self.negation_check(valence, start_i, index);
            if start_i == 2 {
                valence = self.special_idioms_check(valence, index);
            }
        }
        self.least_check(valence, index)
    }

    /// Applies the rules for "no": before another lexicon word it negates that word instead of
    /// counting itself, and up to three words after "no" (or "no X or/nor Y") are negated.
    fn no_adjusted_valence(&self, base_valence: f64, index: usize) -> f64 {
        let mut valence = base_valence;
        if self.lower(index) == "no" && index + 1 < self.num_tokens() && self.in_lexicon(index + 1)
        {
            valence = 0.0;
        }
        let follows_no = (index > 0 && self.lower(index - 1) == "no")
            || (index > 1 && self.lower(index - 2) == "no")
            || (index > 2
                && self.lower(index - 3) == "no"
                && matches!(self.lower(index - 1), "or" | "nor"));
        if follows_no {
            base_valence * N_SCALAR
        } else {
            valence
        }
    }

    /// Python's `_negation_check` for the word `start_i + 1` places before `index`.
    fn negation_check(&self, valence: f64, start_i: usize, index: usize) -> f64 {
        let word = |distance: usize| self.lower(index - distance);
        let is_so_or_this = |distance: usize| matches!(word(distance), "so" | "this");
        let (is_intensified, is_without_doubt) = match start_i {
            0 => (false, false),
            1 => (
                word(2) == "never" && is_so_or_this(1),
                word(2) == "without" && word(1) == "doubt",
            ),
            // Python's operator precedence makes a bare "so"/"this" right before the word count
            // as "never so"; kept as is to give the same numbers
            _ => (
                (word(3) == "never" && is_so_or_this(2)) || is_so_or_this(1),
                word(3) == "without" && (word(2) == "doubt" || word(1) == "doubt"),
            ),
        };
        if is_intensified {
            valence * 1.25
        } else if is_without_doubt {
            valence
        } else if is_negation(word(start_i + 1)) {
            valence * N_SCALAR
        } else {
            valence
        }
    }

    /// Python's `_special_idioms_check`; only called when `index >= 3`.
    fn special_idioms_check(&self, valence: f64, index: usize) -> f64 {
        let [three, two, one, zero] = [3, 2, 1, 0].map(|distance| self.lower(index - distance));
        let preceding: [&[&str]; 5] = [
            &[one, zero],
            &[two, one, zero],
            &[two, one],
            &[three, two, one],
            &[three, two],
        ];
        let mut result = preceding
            .iter()
            .find_map(|words| special_case_value(words))
            .unwrap_or(valence);
        // phrases starting at the word override the ones ending at it
        if index + 1 < self.num_tokens() {
            let next = self.lower(index + 1);
            result = special_case_value(&[zero, next]).unwrap_or(result);
            if index + 2 < self.num_tokens() {
                let after_next = self.lower(index + 2);
                result = special_case_value(&[zero, next, after_next]).unwrap_or(result);
            }
        }
        // booster bigrams such as "kind of" add to the valence regardless of its sign
        for words in [&[three, two, one][..], &[three, two], &[two, one]] {
            if let Some(value) = booster_ngram_value(words) {
                result += value;
            }
        }
        result
    }

    /// Python's `_least_check`: "least X" negates X, except in "at least" and "very least".
    fn least_check(&self, valence: f64, index: usize) -> f64 {
        if index == 0 || self.lower(index - 1) != "least" || self.in_lexicon(index - 1) {
            return valence;
        }
        let is_exempt = index > 1 && matches!(self.lower(index - 2), "at" | "very");
        if is_exempt {
            valence
        } else {
            valence * N_SCALAR
        }
    }
}

/// Python's `_but_check`: halves the sentiments before the first "but" and multiplies the ones
/// after it by 1.5.
///
/// Python locates each value with `list.index`, i.e. at the first position holding an equal
/// value, so a repeated value rescales an earlier position instead of its own. That quirk is
/// kept; positions are indexed by value so the lookup stays cheap on long texts.
fn but_check(tokens: &[Token], sentiments: &mut [f64]) {
    let Some(but_index) = tokens.iter().position(|token| token.lower == "but") else {
        return;
    };
    let mut positions_by_value: HashMap<u64, BTreeSet<usize>> = HashMap::new();
    for (position, value) in sentiments.iter().enumerate() {
        positions_by_value
            .entry(value_key(*value))
            .or_default()
            .insert(position);
    }
    for position in 0..sentiments.len() {
        let value = sentiments[position];
        let first_equal = positions_by_value
            .get(&value_key(value))
            .and_then(|positions| positions.first().copied())
            .unwrap_or(position);
        let factor = match first_equal.cmp(&but_index) {
            Ordering::Less => 0.5,
            Ordering::Greater => 1.5,
            Ordering::Equal => continue,
        };
        let scaled = value * factor;
        if let Some(positions) = positions_by_value.get_mut(&value_key(value)) {
            positions.remove(&first_equal);
        }
        positions_by_value
            .entry(value_key(scaled))
            .or_default()
            .insert(first_equal);
        sentiments[first_equal] = scaled;
    }
}

/// Returns a hash key under which values compare as Python's `==` does (`0.0 == -0.0`).
fn value_key(value: f64) -> u64 {
    if value == 0.0 {
        0.0_f64.to_bits()
    } else {
        value.to_bits()
    }
}

/// Python's `score_valence`: sums the sentiments, adds punctuation emphasis, normalizes, and
/// splits the text into positive, negative and neutral proportions.
fn score_valence(sentiments: &[f64], text: &str) -> PolarityScores {
    if sentiments.is_empty() {
        return PolarityScores {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    // a plain left-to-right sum, as Python 3.11's `sum` does; `0.0 +` turns a -0.0 into 0.0
    let mut sum = 0.0 + sentiments.iter().sum::<f64>();
    let punctuation_amplifier = punctuation_emphasis(text);
    if sum > 0.0 {
        sum += punctuation_amplifier;
    } else if sum < 0.0 {
        sum -= punctuation_amplifier;
    }
    let compound = normalize(sum);

    // each word counts 1 plus its intensity, so neutral words weigh in too
    let mut pos_sum = 0.0;
    let mut neg_sum = 0.0;
    let mut num_neutral = 0_usize;
    for &sentiment in sentiments {
        if sentiment > 0.0 {
            pos_sum += sentiment + 1.0;
        } else if sentiment < 0.0 {
            neg_sum += sentiment - 1.0;
        } else {
            num_neutral += 1;
        }
    }
    if pos_sum > neg_sum.abs() {
        pos_sum += punctuation_amplifier;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= punctuation_amplifier;
    }
    let total = pos_sum + neg_sum.abs() + num_neutral as f64;
    PolarityScores {
        neg: python_round((neg_sum / total).abs(), 3),
        neu: python_round((num_neutral as f64 / total).abs(), 3),
        pos: python_round((pos_sum / total).abs(), 3),
        compound: python_round(compound, 4),
    }
}

/// Returns the emphasis added by up to four "!" and by two or more "?".
fn punctuation_emphasis(text: &str) -> f64 {
    let num_exclamations = text.matches('!').count().min(MAX_COUNTED_EXCLAMATIONS);
    let num_questions = text.matches('?').count();
    let question_amplifier = match num_questions {
        0 | 1 => 0.0,
        2 | 3 => num_questions as f64 * QUESTION_AMPLIFIER,
        _ => MAX_QUESTION_AMPLIFIER,
    };
    num_exclamations as f64 * EXCLAMATION_AMPLIFIER + question_amplifier
}

/// Squashes a raw valence sum into `[-1, 1]`.
fn normalize(score: f64) -> f64 {
    (score / (score * score + NORMALIZE_ALPHA).sqrt()).clamp(-1.0, 1.0)
}

/// Python's `round(value, digits)`: the exact binary value rounded half-to-even in decimal.
/// Rust's fixed-precision formatting rounds the same way, so a round trip through it agrees.
fn python_round(value: f64, digits: usize) -> f64 {
    format!("{value:.digits$}").parse().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_JSONL: &str = include_str!("../tests/fixtures/vader_golden.jsonl");
    const GOLDEN_TOLERANCE: f64 = 1e-3;

    fn scores(text: &str) -> PolarityScores {
        VaderModel::new().polarity_scores(text)
    }

    /// Proves every sentence of the fixture written by `tools/gen_vader_golden.py` scores within
    /// 1e-3 of Python's `vaderSentiment` 3.3.2 on all four numbers.
    #[test]
    fn polarity_scores_match_python_golden_fixture() {
        let model = VaderModel::new();
        let mut mismatches = Vec::new();
        let mut num_sentences = 0;
        for line in GOLDEN_JSONL.lines().filter(|line| !line.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line).expect("valid fixture line");
            let text = record["text"].as_str().expect("fixture text");
            let expected = PolarityScores {
                neg: record["neg"].as_f64().expect("fixture neg"),
                neu: record["neu"].as_f64().expect("fixture neu"),
                pos: record["pos"].as_f64().expect("fixture pos"),
                compound: record["compound"].as_f64().expect("fixture compound"),
            };
            let actual = model.polarity_scores(text);
            let pairs = [
                (actual.neg, expected.neg),
                (actual.neu, expected.neu),
                (actual.pos, expected.pos),
                (actual.compound, expected.compound),
            ];
            if pairs
                .iter()
                .any(|(got, want)| (got - want).abs() > GOLDEN_TOLERANCE)
            {
                mismatches.push(format!("{text:?}: got {actual:?}, python {expected:?}"));
            }
            num_sentences += 1;
        }
        assert!(
            num_sentences >= 60,
            "fixture has only {num_sentences} sentences"
        );
        assert!(
            mismatches.is_empty(),
            "mismatches:\n{}",
            mismatches.join("\n")
        );
    }

    /// Proves the embedded lexicons parse to the sizes Python loads (7,506 words after
    /// duplicates; 1,212 of the emoji entries are single code points).
    #[test]
    fn lexicons_parse_completely() {
        assert_eq!(LEXICON.valences.len(), 7_506);
        assert_eq!(LEXICON.emoji_descriptions.len(), 1_212);
        assert_eq!(LEXICON.valence("good"), Some(1.9));
        assert_eq!(
            LEXICON.emoji_descriptions.get(&'😀'),
            Some(&"grinning face")
        );
    }

    /// Proves tokens keep their punctuation when stripping would leave two characters or fewer,
    /// and lose it otherwise.
    #[test]
    fn tokenizer_keeps_emoticons_and_short_tokens_whole() {
        let senti_text = SentiText::new("Good!!! :) ok. :-( \"great\"");
        let words: Vec<&str> = senti_text
            .tokens
            .iter()
            .map(|token| token.lower.as_str())
            .collect();
        assert_eq!(words, ["good", ":)", "ok.", ":-(", "great"]);
        assert!(!senti_text.is_cap_diff);
        assert!(SentiText::new("I LIKE it").is_cap_diff);
    }

    /// Proves rounding agrees with Python's half-to-even `round` on exactly representable ties.
    #[test]
    fn python_round_breaks_ties_to_even() {
        assert_eq!(python_round(0.0625, 3), 0.062);
        assert_eq!(python_round(0.125, 2), 0.12);
        assert_eq!(python_round(2.675, 2), 2.67);
        assert_eq!(python_round(0.0005, 3), 0.001);
    }

    /// Proves the mapping to `SentimentScore`: label thresholds, confidence and probability.
    #[test]
    fn predict_maps_compound_to_label_and_confidence() {
        let mut model = VaderModel::new();
        let texts = [
            "The book was good.",
            "This is terrible!",
            "The cat sat on the mat.",
        ]
        .map(str::to_owned);
        let results = model.predict(&texts).expect("vader never fails");
        let labels: Vec<SentimentLabel> = results.iter().map(|result| result.label).collect();
        assert_eq!(
            labels,
            [
                SentimentLabel::Positive,
                SentimentLabel::Negative,
                SentimentLabel::Neutral
            ]
        );
        let positive = &results[0];
        let close = |actual: f32, expected: f32| (actual - expected).abs() < 1e-6;
        assert!(close(positive.score, 0.4404), "{positive:?}");
        assert!(close(positive.confidence, 0.4404), "{positive:?}");
        assert!(close(positive.positive_probability, 0.7202), "{positive:?}");
        assert_eq!(positive.engine, "lexicon");
        assert_eq!(positive.model_version, "vader-3.3.2");
        assert!(close(results[1].confidence, 0.5255), "{:?}", results[1]);
        assert!(
            close(results[1].positive_probability, 0.23725),
            "{:?}",
            results[1]
        );
        // a neutral text is as confident as it is neutral: here neu = 1.0
        assert!(close(results[2].confidence, 1.0), "{:?}", results[2]);
    }

    /// Proves the "but" rule reproduces Python's `list.index` quirk: the 1.0 after "but" finds
    /// the already halved "glad" (2.0 -> 1.0) first and halves it again instead of itself.
    #[test]
    fn but_check_rescales_first_equal_value_like_python() {
        let senti_text = SentiText::new("glad x but alright");
        let mut sentiments = vec![2.0, 0.0, 0.0, 1.0];
        but_check(&senti_text.tokens, &mut sentiments);
        assert_eq!(sentiments, [0.5, 0.0, 0.0, 1.0]);
        assert_eq!(
            scores("I was glad to come but the food was alright").compound,
            0.3612
        );
    }

    /// Proves `predict` returns one finite, in-range score per text for hostile inputs: empty,
    /// blank, punctuation only, control characters, odd unicode, emoji runs and 10,000 chars.
    #[test]
    fn predict_never_panics_on_varied_input() {
        let long_words = "not very GOOD but kind of bad!! ".repeat(320);
        let texts = vec![
            String::new(),
            "   \t\n".to_owned(),
            "!?!?.,;:'\"()[]{}".to_owned(),
            "\u{0}\u{1}\u{7}\u{1b}[31m\u{7f}\u{1c}\u{1f}".to_owned(),
            "🇺🇸👍🏽👨‍👩‍👧 😀😀😀😡❤️©®".to_owned(),
            "ǅ ᾈ İ ß ﬁ Σ ΣΑΣ e\u{301} \u{200b}\u{feff}\u{202e}עברית العربية".to_owned(),
            "no no no no least least but but but kind of kind".to_owned(),
            format!("but {}", "good ".repeat(1_990)),
            long_words.chars().take(10_000).collect(),
            "😀".repeat(10_000),
            "a".repeat(10_000),
            "?".repeat(10_000),
            "NEVER SO GOOD never this bad without doubt AT LEAST ok".to_owned(),
        ];
        let results = VaderModel::new()
            .predict(&texts)
            .expect("vader never fails");
        assert_eq!(results.len(), texts.len());
        for (text, result) in texts.iter().zip(&results) {
            let numbers = [result.score, result.confidence, result.positive_probability];
            assert!(
                numbers.iter().all(|number| number.is_finite()),
                "{text:?}: {result:?}"
            );
            assert!((-1.0..=1.0).contains(&result.score), "{text:?}: {result:?}");
            assert!(
                (0.0..=1.0).contains(&result.confidence),
                "{text:?}: {result:?}"
            );
        }
    }
}
