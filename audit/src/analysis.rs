//! The pure half of an AI-visibility audit: finding the brand, its aliases and its competitors
//! in an answer, where they appear, and the numbers an audit reports. No I/O: the audit actor
//! feeds answers in and stores what comes out.
//!
//! # Matching rules
//! - Case-insensitive (Unicode lowercase, char by char), with runs of whitespace in the text
//!   and in the names treated as one space, so `ACME  cloud` matches `Acme Cloud`.
//! - On word boundaries: a name whose first (last) character is a letter or digit matches only
//!   where the character before (after) it is not one, in any script (`char::is_alphanumeric`).
//!   `Acme's` and `Acme-based` mention Acme; `Acmeist` does not. A name that starts or ends with
//!   a symbol (`C++`) has no boundary rule on that side.
//! - Overlapping names: at each position the longest name wins and matches never overlap, so
//!   with brand `Acme` and competitor `Acme Cloud`, "Acme Cloud is fast" mentions only the
//!   competitor, and "Acme beats Acme Cloud" mentions each once.
//!
//! # Ranks
//! A list item is a line starting with `1.`/`1)` (numbered: its rank is its number) or with
//! `-`, `*`, `+`, `•` (bulleted: its rank is its place in the block of bullets). Indented lines
//! under an item belong to it. An entity's list rank is the rank of the item of its first
//! mention inside a list. The **first-mention rank** of the brand in one answer is its list
//! rank when it has one, and otherwise its order among the entities the answer names
//! (1 = named before any competitor).

use serde::{Deserialize, Serialize};

/// Longest sentence sent to the sentiment pool, in characters (the pool's own limit).
pub const MAX_SENTENCE_CHARS: usize = bulwark_ml::MAX_TEXT_CHARS;

/// Abbreviations whose final period does not end a sentence ("Acme Inc. is ...").
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "vs", "inc", "ltd", "co", "corp", "mr", "mrs", "ms", "dr", "st", "no", "approx",
];

/// What an audit looks for: the brand (under its name or an alias) and each competitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSubject {
    pub brand: String,
    pub aliases: Vec<String>,
    pub competitors: Vec<String>,
}

/// One place an answer names the brand or a competitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mention {
    /// The brand's or the competitor's name as configured (an alias reports the brand).
    pub entity: String,
    pub is_brand: bool,
    /// The text as the answer wrote it, e.g. `ACME's` matched as `ACME`.
    pub matched_text: String,
    /// Offset of the first character, counted in characters.
    pub char_offset: usize,
    /// Index into [`AnswerAnalysis::sentences`].
    pub sentence_index: usize,
    /// Rank of the list item the mention is in, if any.
    pub list_rank: Option<u32>,
}

/// Everything found in one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerAnalysis {
    /// Every mention, in text order.
    pub mentions: Vec<Mention>,
    /// The answer's sentences (list items and lines count as sentences), trimmed.
    pub sentences: Vec<String>,
    /// True when the answer has at least two list items.
    pub is_list: bool,
    /// Character offset of the brand's first mention.
    pub brand_first_char: Option<usize>,
    /// The brand's order among the entities the answer names, 1-based.
    pub brand_mention_order: Option<u32>,
    /// Rank of the list item holding the brand's first mention inside a list.
    pub brand_list_rank: Option<u32>,
}

impl AnswerAnalysis {
    pub fn mentions_brand(&self) -> bool {
        self.brand_first_char.is_some()
    }

    /// Returns the list rank when the brand is in a list, otherwise its mention order.
    pub fn brand_first_mention_rank(&self) -> Option<u32> {
        self.brand_list_rank.or(self.brand_mention_order)
    }

    /// Returns the indices of the sentences that mention the brand, each once, in order.
    pub fn brand_sentence_indices(&self) -> Vec<usize> {
        let mut indices: Vec<usize> = self
            .mentions
            .iter()
            .filter(|mention| mention.is_brand)
            .map(|mention| mention.sentence_index)
            .collect();
        indices.dedup();
        indices
    }

    /// Returns the sentences to score for tone, cut to the sentiment pool's length limit.
    pub fn brand_sentences(&self) -> Vec<String> {
        self.brand_sentence_indices()
            .into_iter()
            .map(|index| truncate_chars(&self.sentences[index], MAX_SENTENCE_CHARS))
            .collect()
    }
}

fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((byte_index, _)) => text[..byte_index].to_owned(),
        None => text.to_owned(),
    }
}

/// One character of normalized text and the bytes of the original it came from.
#[derive(Debug, Clone, Copy)]
struct NormalizedChar {
    lowered: char,
    byte_start: usize,
    byte_end: usize,
    char_index: usize,
}

/// Lowercases char by char and folds whitespace runs into one space, remembering where each
/// normalized character came from.
fn normalize(text: &str) -> Vec<NormalizedChar> {
    let mut normalized: Vec<NormalizedChar> = Vec::with_capacity(text.len());
    for (char_index, (byte_start, original)) in text.char_indices().enumerate() {
        let byte_end = byte_start + original.len_utf8();
        if original.is_whitespace() {
            match normalized.last_mut() {
                Some(last) if last.lowered == ' ' => last.byte_end = byte_end,
                _ => normalized.push(NormalizedChar {
                    lowered: ' ',
                    byte_start,
                    byte_end,
                    char_index,
                }),
            }
            continue;
        }
        for lowered in original.to_lowercase() {
            normalized.push(NormalizedChar {
                lowered,
                byte_start,
                byte_end,
                char_index,
            });
        }
    }
    normalized
}

fn normalize_name(name: &str) -> Vec<char> {
    let trimmed = name.trim();
    normalize(trimmed)
        .into_iter()
        .map(|normalized| normalized.lowered)
        .collect()
}

/// A name to look for and the entity it reports.
#[derive(Debug, Clone)]
struct Term {
    chars: Vec<char>,
    /// 0 is the brand, `n` the competitor `n - 1`.
    entity_index: usize,
}

/// Finds the subject's names in answers. Built once per audit.
#[derive(Debug, Clone)]
pub struct MentionMatcher {
    entities: Vec<String>,
    terms: Vec<Term>,
}

impl MentionMatcher {
    pub fn new(subject: &AuditSubject) -> MentionMatcher {
        let mut entities = vec![subject.brand.trim().to_owned()];
        let mut terms: Vec<Term> = Vec::new();
        let mut add_term = |name: &str, entity_index: usize| {
            let chars = normalize_name(name);
            // The first owner of a name keeps it: the brand before any competitor.
            if !chars.is_empty() && terms.iter().all(|term| term.chars != chars) {
                terms.push(Term {
                    chars,
                    entity_index,
                });
            }
        };
        add_term(&subject.brand, 0);
        for alias in &subject.aliases {
            add_term(alias, 0);
        }
        for competitor in &subject.competitors {
            entities.push(competitor.trim().to_owned());
            add_term(competitor, entities.len() - 1);
        }
        MentionMatcher { entities, terms }
    }

    /// Returns the brand's name followed by the competitors' names.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// Analyzes one answer.
    pub fn analyze(&self, answer: &str) -> AnswerAnalysis {
        let normalized = normalize(answer);
        let sentences = split_sentences(answer);
        let list_items = find_list_items(answer);
        let mut mentions = Vec::new();
        for (start, end, entity_index) in self.find_matches(&normalized) {
            let byte_start = normalized[start].byte_start;
            let byte_end = normalized[end - 1].byte_end;
            let sentence_index = sentences
                .iter()
                .position(|sentence| byte_start < sentence.byte_end)
                .unwrap_or(sentences.len().saturating_sub(1));
            let list_rank = list_items
                .iter()
                .find(|item| item.byte_start <= byte_start && byte_start < item.byte_end)
                .map(|item| item.rank);
            mentions.push(Mention {
                entity: self.entities[entity_index].clone(),
                is_brand: entity_index == 0,
                matched_text: answer[byte_start..byte_end].to_owned(),
                char_offset: normalized[start].char_index,
                sentence_index,
                list_rank,
            });
        }
        let brand_first = mentions.iter().find(|mention| mention.is_brand);
        let brand_first_char = brand_first.map(|mention| mention.char_offset);
        let brand_mention_order = brand_first.map(|first| {
            let mut named_before: Vec<&str> = mentions
                .iter()
                .take_while(|mention| mention.char_offset < first.char_offset)
                .map(|mention| mention.entity.as_str())
                .collect();
            named_before.sort_unstable();
            named_before.dedup();
            u32::try_from(named_before.len() + 1).unwrap_or(u32::MAX)
        });
        let brand_list_rank = mentions
            .iter()
            .filter(|mention| mention.is_brand)
            .find_map(|mention| mention.list_rank);
        AnswerAnalysis {
            sentences: sentences
                .into_iter()
                .map(|sentence| sentence.text)
                .collect(),
            is_list: list_items.len() >= 2,
            mentions,
            brand_first_char,
            brand_mention_order,
            brand_list_rank,
        }
    }

    /// Returns `(start, end, entity_index)` in normalized positions: leftmost, then longest,
    /// never overlapping.
    fn find_matches(&self, text: &[NormalizedChar]) -> Vec<(usize, usize, usize)> {
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
        for term in &self.terms {
            let length = term.chars.len();
            if length > text.len() {
                continue;
            }
            for start in 0..=text.len() - length {
                let matches = text[start..start + length]
                    .iter()
                    .zip(&term.chars)
                    .all(|(normalized, expected)| normalized.lowered == *expected);
                if matches && on_boundaries(text, start, start + length) {
                    candidates.push((start, start + length, term.entity_index));
                }
            }
        }
        candidates.sort_by(|left, right| left.0.cmp(&right.0).then(right.1.cmp(&left.1)));
        let mut chosen: Vec<(usize, usize, usize)> = Vec::new();
        for candidate in candidates {
            if chosen.last().is_none_or(|last| candidate.0 >= last.1) {
                chosen.push(candidate);
            }
        }
        chosen
    }
}

/// Checks the word-boundary rule for a match over `text[start..end]`.
fn on_boundaries(text: &[NormalizedChar], start: usize, end: usize) -> bool {
    let starts_with_word = text[start].lowered.is_alphanumeric();
    let ends_with_word = text[end - 1].lowered.is_alphanumeric();
    // A lowercase expansion (one original char, several lowered) must be matched whole.
    let splits_char_before = start > 0 && text[start - 1].byte_start == text[start].byte_start;
    let splits_char_after = end < text.len() && text[end].byte_start == text[end - 1].byte_start;
    if splits_char_before || splits_char_after {
        return false;
    }
    let before_ok = !starts_with_word || start == 0 || !text[start - 1].lowered.is_alphanumeric();
    let after_ok = !ends_with_word || end == text.len() || !text[end].lowered.is_alphanumeric();
    before_ok && after_ok
}

/// A sentence and the bytes of the answer it spans.
#[derive(Debug, Clone, PartialEq)]
struct Sentence {
    text: String,
    byte_end: usize,
}

/// Splits on line breaks and on `.`, `!`, `?` followed by whitespace, except after known
/// abbreviations, single letters (initials) and list numbers at the start of a line.
fn split_sentences(text: &str) -> Vec<Sentence> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let push = |from: usize, to: usize, sentences: &mut Vec<Sentence>| {
        let piece = text[from..to].trim();
        if !piece.is_empty() {
            sentences.push(Sentence {
                text: piece.to_owned(),
                byte_end: to,
            });
        }
    };
    for (position, &(byte_index, character)) in chars.iter().enumerate() {
        let byte_after = byte_index + character.len_utf8();
        if character == '\n' {
            push(start, byte_after, &mut sentences);
            start = byte_after;
            continue;
        }
        if !matches!(character, '.' | '!' | '?') {
            continue;
        }
        let next_opt = chars.get(position + 1).map(|&(_, next)| next);
        if !next_opt.is_none_or(char::is_whitespace) {
            continue;
        }
        if character == '.' && period_is_not_an_end(&text[start..byte_index]) {
            continue;
        }
        push(start, byte_after, &mut sentences);
        start = byte_after;
    }
    push(start, text.len(), &mut sentences);
    if sentences.is_empty() {
        sentences.push(Sentence {
            text: String::new(),
            byte_end: text.len(),
        });
    }
    sentences
}

/// Returns true when the period after `before` belongs to an abbreviation, an initial or a
/// list number rather than ending a sentence.
fn period_is_not_an_end(before: &str) -> bool {
    let trimmed = before.trim_start();
    if !trimmed.is_empty() && trimmed.chars().all(|character| character.is_ascii_digit()) {
        return true;
    }
    let last_word = before
        .rsplit(|character: char| character.is_whitespace() || character == '(')
        .next()
        .unwrap_or("");
    let mut letters = last_word.chars();
    if let (Some(only), None) = (letters.next(), letters.next())
        && only.is_alphabetic()
    {
        return true;
    }
    let lowered = last_word.to_lowercase();
    ABBREVIATIONS.contains(&lowered.as_str())
}

/// A list item: its rank and the bytes it spans (its line and the indented lines under it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ListItem {
    rank: u32,
    byte_start: usize,
    byte_end: usize,
}

/// Returns `Some(number)` for a numbered item, `Some(None)` for a bullet, `None` otherwise.
fn list_marker(line: &str) -> Option<Option<u32>> {
    let trimmed = line.trim_start();
    let trimmed = trimmed.trim_start_matches("**");
    let digits: String = trimmed.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() && digits.len() <= 3 {
        let rest = &trimmed[digits.len()..];
        let after_marker = rest.strip_prefix('.').or_else(|| rest.strip_prefix(')'))?;
        if after_marker.starts_with(char::is_whitespace) {
            return digits.parse().ok().map(Some);
        }
        return None;
    }
    let mut characters = trimmed.chars();
    let bullet = characters.next()?;
    let after_bullet = characters.next()?;
    (matches!(bullet, '-' | '*' | '+' | '•') && after_bullet.is_whitespace()).then_some(None)
}

fn find_list_items(text: &str) -> Vec<ListItem> {
    let mut items: Vec<ListItem> = Vec::new();
    let mut bullets_in_block = 0_u32;
    let mut in_list = false;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let indented = line.starts_with(char::is_whitespace) && !line.trim().is_empty();
        let numbered_parent = in_list && indented;
        match list_marker(line) {
            // A sub-item under a numbered item belongs to it.
            Some(_) if numbered_parent && items.last().is_some() => {
                if let Some(parent) = items.last_mut() {
                    parent.byte_end = line_end;
                }
            }
            Some(number_opt) => {
                let rank = match number_opt {
                    Some(number) => number,
                    None => {
                        bullets_in_block += 1;
                        bullets_in_block
                    }
                };
                items.push(ListItem {
                    rank,
                    byte_start: line_start,
                    byte_end: line_end,
                });
                in_list = true;
            }
            None if line.trim().is_empty() => {}
            None if indented && in_list => {
                if let Some(parent) = items.last_mut() {
                    parent.byte_end = line_end;
                }
            }
            None => {
                in_list = false;
                bullets_in_block = 0;
            }
        }
        line_start = line_end;
    }
    items
}

/// What the summary needs of one stored mention.
#[derive(Debug, Clone, PartialEq)]
pub struct MentionFacts {
    pub entity: String,
    pub is_brand: bool,
    /// Tone of the mention's sentence, in `[-1, 1]`; `None` when not scored.
    pub sentiment: Option<f32>,
}

/// What the summary needs of one answered item.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerFacts {
    pub provider: String,
    pub mentions: Vec<MentionFacts>,
    pub first_mention_rank: Option<u32>,
}

/// One competitor's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompetitorSummary {
    pub name: String,
    pub num_mentions: u64,
    /// Answers naming the competitor over all answers.
    pub mention_rate: f64,
    /// The competitor's mentions over all mentions of the brand and the competitors.
    pub share_of_voice: Option<f64>,
}

/// An audit's numbers over a set of answers (one provider's, or all of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryBlock {
    /// Items asked (answered plus failed).
    pub num_items: u64,
    pub num_answers: u64,
    pub num_failed: u64,
    pub num_brand_answers: u64,
    /// Answers mentioning the brand over answers; 0 when nothing was answered.
    pub mention_rate: f64,
    pub num_brand_mentions: u64,
    pub num_competitor_mentions: u64,
    /// Brand mentions over all mentions of the brand and the competitors; `None` when no
    /// entity was mentioned at all.
    pub share_of_voice: Option<f64>,
    /// Mean tone in `[-1, 1]` of the sentences of the brand's mentions.
    pub average_sentiment: Option<f64>,
    /// Mean first-mention rank over the answers that mention the brand (1 is best).
    pub average_first_mention_rank: Option<f64>,
    pub competitors: Vec<CompetitorSummary>,
}

/// One provider's block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSummary {
    pub provider: String,
    #[serde(flatten)]
    pub summary: SummaryBlock,
}

/// The summary of a whole audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub overall: SummaryBlock,
    /// One block per provider, in the order the audit named them.
    pub providers: Vec<ProviderSummary>,
}

impl AuditSummary {
    /// Returns the block of one provider.
    pub fn provider(&self, name: &str) -> Option<&SummaryBlock> {
        self.providers
            .iter()
            .find(|block| block.provider == name)
            .map(|block| &block.summary)
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Computes one block from answers and the number of failed items among them.
pub fn summarize_block(
    competitors: &[String],
    answers: &[&AnswerFacts],
    num_failed: u64,
) -> SummaryBlock {
    let num_answers = answers.len() as u64;
    let mut num_brand_answers = 0;
    let mut num_brand_mentions = 0;
    let mut sentiments = Vec::new();
    let mut ranks = Vec::new();
    let mut competitor_mentions = vec![0_u64; competitors.len()];
    let mut competitor_answers = vec![0_u64; competitors.len()];
    for answer in answers {
        let brand_mentions = answer.mentions.iter().filter(|mention| mention.is_brand);
        let mut mentions_brand = false;
        for mention in brand_mentions {
            mentions_brand = true;
            num_brand_mentions += 1;
            sentiments.extend(mention.sentiment.map(f64::from));
        }
        if mentions_brand {
            num_brand_answers += 1;
            ranks.extend(answer.first_mention_rank.map(f64::from));
        }
        for (index, competitor) in competitors.iter().enumerate() {
            let count = answer
                .mentions
                .iter()
                .filter(|mention| !mention.is_brand && &mention.entity == competitor)
                .count() as u64;
            competitor_mentions[index] += count;
            competitor_answers[index] += u64::from(count > 0);
        }
    }
    let num_competitor_mentions: u64 = competitor_mentions.iter().sum();
    let num_all_mentions = num_brand_mentions + num_competitor_mentions;
    SummaryBlock {
        num_items: num_answers + num_failed,
        num_answers,
        num_failed,
        num_brand_answers,
        mention_rate: ratio(num_brand_answers, num_answers).unwrap_or(0.0),
        num_brand_mentions,
        num_competitor_mentions,
        share_of_voice: ratio(num_brand_mentions, num_all_mentions),
        average_sentiment: mean(&sentiments),
        average_first_mention_rank: mean(&ranks),
        competitors: competitors
            .iter()
            .enumerate()
            .map(|(index, name)| CompetitorSummary {
                name: name.clone(),
                num_mentions: competitor_mentions[index],
                mention_rate: ratio(competitor_answers[index], num_answers).unwrap_or(0.0),
                share_of_voice: ratio(competitor_mentions[index], num_all_mentions),
            })
            .collect(),
    }
}

/// Computes the overall and per-provider summaries. `failed_providers` names the provider of
/// each failed item; every provider in `providers` gets a block even with no answer.
pub fn summarize(
    subject: &AuditSubject,
    providers: &[String],
    answers: &[AnswerFacts],
    failed_providers: &[String],
) -> AuditSummary {
    let competitors: Vec<String> = subject
        .competitors
        .iter()
        .map(|name| name.trim().to_owned())
        .collect();
    let all: Vec<&AnswerFacts> = answers.iter().collect();
    let overall = summarize_block(&competitors, &all, failed_providers.len() as u64);
    let providers = providers
        .iter()
        .map(|provider| {
            let own: Vec<&AnswerFacts> = answers
                .iter()
                .filter(|answer| &answer.provider == provider)
                .collect();
            let num_failed = failed_providers
                .iter()
                .filter(|failed| *failed == provider)
                .count() as u64;
            ProviderSummary {
                provider: provider.clone(),
                summary: summarize_block(&competitors, &own, num_failed),
            }
        })
        .collect();
    AuditSummary { overall, providers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(brand: &str, aliases: &[&str], competitors: &[&str]) -> AuditSubject {
        AuditSubject {
            brand: brand.to_owned(),
            aliases: aliases.iter().map(|alias| (*alias).to_owned()).collect(),
            competitors: competitors.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    fn entities(analysis: &AnswerAnalysis) -> Vec<&str> {
        analysis
            .mentions
            .iter()
            .map(|mention| mention.entity.as_str())
            .collect()
    }

    /// Proves matching ignores case and needs word boundaries on both sides.
    #[test]
    fn matches_case_insensitively_on_word_boundaries() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &["Globex"]));
        let analysis =
            matcher.analyze("ACME's tools beat globex. Acmeist and MegaAcme are not Acme-ish.");
        assert_eq!(entities(&analysis), ["Acme", "Globex", "Acme"]);
        assert_eq!(analysis.mentions[0].matched_text, "ACME");
        assert_eq!(analysis.mentions[1].matched_text, "globex");
        assert_eq!(analysis.mentions[2].matched_text, "Acme");
        assert_eq!(analysis.brand_first_char, Some(0));
    }

    /// Proves boundaries and case work beyond ASCII: accented, Cyrillic and CJK neighbours.
    #[test]
    fn matching_is_unicode_aware() {
        let matcher = MentionMatcher::new(&subject("Café Noir", &["Ёлка"], &["Über"]));
        let analysis = matcher.analyze(
            "Try CAFÉ NOIR or ÜBER. Not cafénoir, not Café Noirs, not überall. ёлка! 東京Ёлка",
        );
        assert_eq!(entities(&analysis), ["Café Noir", "Über", "Café Noir"]);
        assert_eq!(analysis.mentions[2].matched_text, "ёлка");
        // The offset is counted in characters, not bytes.
        assert_eq!(analysis.mentions[1].char_offset, 17);
    }

    /// Proves the longest name wins where names overlap, and matches never overlap.
    #[test]
    fn overlapping_names_take_the_longest_match() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &["Acme Cloud"]));
        let analysis = matcher.analyze("Acme Cloud is fast, but Acme is cheaper than acme  cloud.");
        assert_eq!(entities(&analysis), ["Acme Cloud", "Acme", "Acme Cloud"]);
        assert_eq!(analysis.mentions[2].matched_text, "acme  cloud");
        let reversed = MentionMatcher::new(&subject("Acme Cloud", &["Acme"], &["Acme Corp"]));
        let analysis = reversed.analyze("Acme, Acme Cloud and Acme Corp.");
        assert_eq!(
            entities(&analysis),
            ["Acme Cloud", "Acme Cloud", "Acme Corp"]
        );
        assert!(analysis.mentions[0].is_brand && !analysis.mentions[2].is_brand);
    }

    /// Proves aliases report the brand and a name shared with a competitor stays the brand's.
    #[test]
    fn aliases_report_the_brand() {
        let matcher = MentionMatcher::new(&subject("Acme", &["ACME Corp", "acme"], &["Acme"]));
        let analysis = matcher.analyze("acme corp leads.");
        assert_eq!(entities(&analysis), ["Acme"]);
        assert!(analysis.mentions[0].is_brand);
        assert_eq!(analysis.mentions[0].matched_text, "acme corp");
    }

    /// Proves names ending in symbols match without a boundary rule on that side.
    #[test]
    fn symbol_edged_names_match() {
        let matcher = MentionMatcher::new(&subject("C++", &[], &["C"]));
        let analysis = matcher.analyze("Use C++ or C, not C#.");
        assert_eq!(entities(&analysis), ["C++", "C", "C"]);
    }

    /// Proves an answer without the brand reports no first mention and no rank.
    #[test]
    fn absent_brand_has_no_position() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &["Globex"]));
        let analysis = matcher.analyze("Globex is the usual choice.");
        assert!(!analysis.mentions_brand());
        assert_eq!(analysis.brand_first_mention_rank(), None);
        assert!(analysis.brand_sentences().is_empty());
        let empty = matcher.analyze("");
        assert!(empty.mentions.is_empty());
    }

    /// Proves sentences split on punctuation and lines but not after abbreviations, initials,
    /// decimals or list numbers, and that brand sentences are listed once each.
    #[test]
    fn sentences_mentioning_the_brand() {
        let matcher = MentionMatcher::new(&subject("Acme", &["Acme Inc."], &["Globex"]));
        let answer = "Acme Inc. is solid, e.g. for teams. Globex costs 3.5 times more!\n\
                      Is Acme better than Acme Cloud? J. Smith thinks so\n1. Acme is first";
        let analysis = matcher.analyze(answer);
        assert_eq!(
            analysis.sentences,
            [
                "Acme Inc. is solid, e.g. for teams.",
                "Globex costs 3.5 times more!",
                "Is Acme better than Acme Cloud?",
                "J. Smith thinks so",
                "1. Acme is first",
            ]
        );
        assert_eq!(
            analysis.brand_sentences(),
            [
                "Acme Inc. is solid, e.g. for teams.",
                "Is Acme better than Acme Cloud?",
                "1. Acme is first",
            ]
        );
    }

    /// Proves numbered lists rank by their numbers, bullets by their place, sub-items and
    /// indented lines belong to their item, and an intro mention does not count as a rank.
    #[test]
    fn ranks_in_lists() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &["Globex", "Initech"]));
        let numbered = "Good options (Acme is popular):\n\n1. Globex - the leader\n\
                        2) Initech\n   - mostly used by banks, like Acme\n3. **Acme**: cheap\n";
        let analysis = matcher.analyze(numbered);
        assert!(analysis.is_list);
        let ranks: Vec<Option<u32>> = analysis
            .mentions
            .iter()
            .map(|mention| mention.list_rank)
            .collect();
        assert_eq!(ranks, [None, Some(1), Some(2), Some(2), Some(3)]);
        assert_eq!(analysis.brand_list_rank, Some(2));
        assert_eq!(analysis.brand_mention_order, Some(1));
        assert_eq!(analysis.brand_first_mention_rank(), Some(2));

        let bullets = "- Globex\n- Initech\n* Acme\n\nThen:\n- Acme again";
        let analysis = matcher.analyze(bullets);
        assert_eq!(analysis.brand_list_rank, Some(3));
        assert_eq!(analysis.mentions[3].list_rank, Some(1));

        let prose = "Globex and Initech are fine, and Acme too.";
        let analysis = matcher.analyze(prose);
        assert!(!analysis.is_list);
        assert_eq!(analysis.brand_list_rank, None);
        assert_eq!(analysis.brand_first_mention_rank(), Some(3));
        assert_eq!(analysis.brand_first_char, Some(33));
    }

    /// Proves a line starting with a year or a number is not a list item.
    #[test]
    fn numbers_that_are_not_list_markers() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &[]));
        let analysis = matcher.analyze("2024 was Acme's year.\n1999.5 units\n-Acme");
        assert!(!analysis.is_list);
        assert_eq!(analysis.brand_list_rank, None);
    }

    /// Proves long sentences are cut to the sentiment pool's limit on a character boundary.
    #[test]
    fn brand_sentences_fit_the_sentiment_pool() {
        let matcher = MentionMatcher::new(&subject("Acme", &[], &[]));
        let answer = format!("Acme {}", "é".repeat(MAX_SENTENCE_CHARS));
        let sentences = matcher.analyze(&answer).brand_sentences();
        assert_eq!(sentences[0].chars().count(), MAX_SENTENCE_CHARS);
    }

    fn facts(
        provider: &str,
        mentions: &[(&str, bool, Option<f32>)],
        rank: Option<u32>,
    ) -> AnswerFacts {
        AnswerFacts {
            provider: provider.to_owned(),
            mentions: mentions
                .iter()
                .map(|&(entity, is_brand, sentiment)| MentionFacts {
                    entity: entity.to_owned(),
                    is_brand,
                    sentiment,
                })
                .collect(),
            first_mention_rank: rank,
        }
    }

    /// Proves the aggregates: mention rate, share of voice, mean tone and rank, per provider
    /// and overall, with failures counted and providers without answers still present.
    #[test]
    fn summaries_per_provider_and_overall() {
        let subject = subject("Acme", &[], &["Globex", "Initech"]);
        let providers = [
            "openai".to_owned(),
            "anthropic".to_owned(),
            "down".to_owned(),
        ];
        let answers = [
            facts(
                "openai",
                &[
                    ("Acme", true, Some(0.8)),
                    ("Globex", false, None),
                    ("Acme", true, Some(0.4)),
                ],
                Some(1),
            ),
            facts("openai", &[("Globex", false, None)], None),
            facts(
                "anthropic",
                &[("Initech", false, None), ("Acme", true, Some(-0.6))],
                Some(2),
            ),
            facts("anthropic", &[], None),
        ];
        let failed = ["down".to_owned(), "down".to_owned(), "openai".to_owned()];
        let summary = summarize(&subject, &providers, &answers, &failed);

        let overall = &summary.overall;
        assert_eq!(overall.num_items, 7);
        assert_eq!(overall.num_answers, 4);
        assert_eq!(overall.num_failed, 3);
        assert_eq!(overall.num_brand_answers, 2);
        assert_eq!(overall.mention_rate, 0.5);
        assert_eq!(overall.num_brand_mentions, 3);
        assert_eq!(overall.num_competitor_mentions, 3);
        assert_eq!(overall.share_of_voice, Some(0.5));
        let average_sentiment = overall.average_sentiment.unwrap();
        assert!(
            (average_sentiment - 0.2).abs() < 1e-6,
            "{average_sentiment}"
        );
        assert_eq!(overall.average_first_mention_rank, Some(1.5));
        assert_eq!(overall.competitors[0].name, "Globex");
        assert_eq!(overall.competitors[0].num_mentions, 2);
        assert_eq!(overall.competitors[0].mention_rate, 0.5);
        assert_eq!(overall.competitors[1].share_of_voice, Some(1.0 / 6.0));

        let openai = &summary.provider("openai").unwrap();
        assert_eq!((openai.num_answers, openai.num_failed), (2, 1));
        assert_eq!(openai.share_of_voice, Some(0.5));
        assert_eq!(openai.average_first_mention_rank, Some(1.0));
        let down = &summary.provider("down").unwrap();
        assert_eq!(
            (down.num_items, down.num_answers, down.num_failed),
            (2, 0, 2)
        );
        assert_eq!(down.mention_rate, 0.0);
        assert_eq!(down.share_of_voice, None);
        assert_eq!(down.average_sentiment, None);
    }

    /// Proves analysis output feeds the summary: a full round trip from answer text.
    #[test]
    fn analysis_to_summary() {
        let subject = subject("Acme", &["AcmeDB"], &["Globex"]);
        let matcher = MentionMatcher::new(&subject);
        let answers: Vec<AnswerFacts> = ["1. AcmeDB\n2. Globex", "Globex, then Acme.", "None."]
            .iter()
            .map(|text| {
                let analysis = matcher.analyze(text);
                AnswerFacts {
                    provider: "simulated".to_owned(),
                    first_mention_rank: analysis.brand_first_mention_rank(),
                    mentions: analysis
                        .mentions
                        .iter()
                        .map(|mention| MentionFacts {
                            entity: mention.entity.clone(),
                            is_brand: mention.is_brand,
                            sentiment: None,
                        })
                        .collect(),
                }
            })
            .collect();
        let summary = summarize(&subject, &["simulated".to_owned()], &answers, &[]);
        assert_eq!(summary.overall.num_brand_answers, 2);
        assert_eq!(summary.overall.average_first_mention_rank, Some(1.5));
        assert_eq!(summary.overall.share_of_voice, Some(0.5));
    }
}
