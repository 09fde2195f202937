//! Renders an audit as CSV (one row per item, or one per provider) and as a self-contained
//! HTML page: the summary table and a bar chart in inline SVG, no external assets, every piece
//! of submitted or generated text escaped.

use std::fmt::Write as _;

use bulwark_store::{Audit, AuditItem, AuditItemStatus, AuditMention};

use crate::analysis::{AuditSummary, SummaryBlock};
use crate::request::AuditRequest;

/// Everything a report shows.
#[derive(Debug)]
pub struct ReportData<'a> {
    pub audit: &'a Audit,
    pub request: &'a AuditRequest,
    pub items: &'a [AuditItem],
    pub mentions: &'a [AuditMention],
    pub summary: &'a AuditSummary,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Keeps a spreadsheet from running a cell as a formula (CSV injection): cells starting with
/// `=`, `+`, `-`, `@`, tab or carriage return get a leading apostrophe. Numbers we write
/// ourselves are not passed through here.
fn spreadsheet_safe(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

fn optional_number(value_opt: Option<f64>) -> String {
    value_opt.map_or_else(String::new, |value| format!("{value:.4}"))
}

fn optional_integer(value_opt: Option<i64>) -> String {
    value_opt.map_or_else(String::new, |value| value.to_string())
}

/// Renders one row per item, in item order.
pub fn items_csv(data: &ReportData<'_>) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "item_index",
        "prompt_index",
        "prompt",
        "provider",
        "sample",
        "status",
        "answered_by",
        "model",
        "brand_mentioned",
        "num_brand_mentions",
        "competitors_mentioned",
        "first_mention_char",
        "first_mention_rank",
        "list_rank",
        "brand_sentiment",
        "latency_ms",
        "error_code",
        "error_message",
        "answer",
    ])?;
    for item in data.items {
        let own_mentions = data
            .mentions
            .iter()
            .filter(|mention| mention.item_index == item.item_index);
        let mut num_brand_mentions = 0;
        let mut competitors: Vec<&str> = Vec::new();
        for mention in own_mentions {
            if mention.is_brand {
                num_brand_mentions += 1;
            } else if !competitors.contains(&mention.entity.as_str()) {
                competitors.push(&mention.entity);
            }
        }
        let prompt = usize::try_from(item.prompt_index)
            .ok()
            .and_then(|index| data.request.prompts.get(index))
            .map_or("", String::as_str);
        writer.write_record([
            item.item_index.to_string(),
            item.prompt_index.to_string(),
            spreadsheet_safe(prompt),
            spreadsheet_safe(&item.provider),
            item.sample.to_string(),
            item.status.as_str().to_owned(),
            spreadsheet_safe(item.answered_by.as_deref().unwrap_or("")),
            spreadsheet_safe(item.model.as_deref().unwrap_or("")),
            item.brand_mentioned.to_string(),
            num_brand_mentions.to_string(),
            spreadsheet_safe(&competitors.join("; ")),
            optional_integer(item.first_mention_char),
            optional_integer(item.first_mention_rank),
            optional_integer(item.list_rank),
            optional_number(item.brand_sentiment),
            optional_number(item.latency_ms),
            item.error_code.clone().unwrap_or_default(),
            spreadsheet_safe(item.error_message.as_deref().unwrap_or("")),
            spreadsheet_safe(item.answer.as_deref().unwrap_or("")),
        ])?;
    }
    finish_csv(writer)
}

/// Renders one row per provider and one `overall` row.
pub fn summary_csv(data: &ReportData<'_>) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "provider",
        "num_items",
        "num_answers",
        "num_failed",
        "mention_rate",
        "share_of_voice",
        "average_sentiment",
        "average_first_mention_rank",
        "num_brand_mentions",
        "num_competitor_mentions",
    ])?;
    let overall = std::iter::once(("overall", &data.summary.overall));
    let providers = data
        .summary
        .providers
        .iter()
        .map(|block| (block.provider.as_str(), &block.summary));
    for (name, block) in providers.chain(overall) {
        writer.write_record([
            spreadsheet_safe(name),
            block.num_items.to_string(),
            block.num_answers.to_string(),
            block.num_failed.to_string(),
            format!("{:.4}", block.mention_rate),
            optional_number(block.share_of_voice),
            optional_number(block.average_sentiment),
            optional_number(block.average_first_mention_rank),
            block.num_brand_mentions.to_string(),
            block.num_competitor_mentions.to_string(),
        ])?;
    }
    finish_csv(writer)
}

fn finish_csv(writer: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))?;
    // Every field written above is a `String` or `&str`, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn optional_percent(value_opt: Option<f64>) -> String {
    value_opt.map_or_else(|| "–".to_owned(), percent)
}

fn optional_fixed(value_opt: Option<f64>, decimals: usize) -> String {
    value_opt.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

fn summary_row(html: &mut String, name: &str, block: &SummaryBlock, is_total: bool) {
    let class = if is_total { " class=\"total\"" } else { "" };
    let _ = write!(
        html,
        "<tr{class}><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td></tr>",
        escape_html(name),
        block.num_answers,
        block.num_failed,
        percent(block.mention_rate),
        optional_percent(block.share_of_voice),
        optional_fixed(block.average_sentiment, 2),
        optional_fixed(block.average_first_mention_rank, 2),
        block.num_brand_mentions,
    );
}

/// Draws mention rate and share of voice per provider as horizontal bars.
fn chart_svg(summary: &AuditSummary) -> String {
    const LABEL_WIDTH: usize = 160;
    const BAR_WIDTH: f64 = 400.0;
    const ROW_HEIGHT: usize = 44;
    let rows: Vec<(&str, &SummaryBlock)> = summary
        .providers
        .iter()
        .map(|block| (block.provider.as_str(), &block.summary))
        .chain(std::iter::once(("overall", &summary.overall)))
        .collect();
    let height = rows.len() * ROW_HEIGHT + 40;
    let width = LABEL_WIDTH + BAR_WIDTH as usize + 80;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Mention rate and share of \
         voice per provider\">"
    );
    for (row, (name, block)) in rows.iter().enumerate() {
        let top = row * ROW_HEIGHT + 10;
        let share = block.share_of_voice.unwrap_or(0.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{top}\" width=\"{:.1}\" height=\"16\" fill=\"#2f6fde\">\
             <title>mention rate {}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{}\" width=\"{:.1}\" height=\"16\" fill=\"#f29d38\">\
             <title>share of voice {}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{}</text>",
            top + 20,
            escape_html(name),
            block.mention_rate * BAR_WIDTH,
            percent(block.mention_rate),
            LABEL_WIDTH as f64 + block.mention_rate * BAR_WIDTH + 4.0,
            top + 13,
            percent(block.mention_rate),
            top + 18,
            share * BAR_WIDTH,
            optional_percent(block.share_of_voice),
            LABEL_WIDTH as f64 + share * BAR_WIDTH + 4.0,
            top + 31,
            optional_percent(block.share_of_voice),
        );
    }
    let legend_top = rows.len() * ROW_HEIGHT + 20;
    let _ = write!(
        svg,
        "<rect x=\"{LABEL_WIDTH}\" y=\"{legend_top}\" width=\"12\" height=\"12\" fill=\"#2f6fde\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\">mention rate</text>\
         <rect x=\"{}\" y=\"{legend_top}\" width=\"12\" height=\"12\" fill=\"#f29d38\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\">share of voice</text></svg>",
        LABEL_WIDTH + 16,
        legend_top + 11,
        LABEL_WIDTH + 120,
        LABEL_WIDTH + 136,
        legend_top + 11,
    );
    svg
}

/// The report's only stylesheet, inline: the CSP of HTML pages allows it by its hash.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330;\
    max-width:72rem}table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #d5d9e0;\
    padding:.35rem .6rem;text-align:left;vertical-align:top}tr.total{font-weight:600;\
    background:#f3f5f9}.failed{color:#b42318}.muted{color:#667085}td.answer{max-width:36rem;\
    white-space:pre-wrap}";

/// Renders the whole report page.
pub fn html_page(data: &ReportData<'_>) -> String {
    let audit = data.audit;
    let request = data.request;
    let brand = escape_html(&request.brand);
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>AI visibility audit: {brand}</title><style>{STYLE}</style></head><body>\
         <h1>AI visibility audit: {brand}</h1>\
         <p class=\"muted\">Audit {} · status <strong>{}</strong> · {} prompts × {} providers × \
         {} samples</p>",
        escape_html(&audit.id),
        audit.status.as_str(),
        request.prompts.len(),
        request.providers.len(),
        request.samples_per_prompt,
    );
    let aliases: Vec<String> = request
        .aliases
        .iter()
        .map(|name| escape_html(name))
        .collect();
    let competitors: Vec<String> = request
        .competitors
        .iter()
        .map(|name| escape_html(name))
        .collect();
    let _ = write!(
        html,
        "<p>Aliases: {}. Competitors: {}.</p>",
        if aliases.is_empty() {
            "none".to_owned()
        } else {
            aliases.join(", ")
        },
        if competitors.is_empty() {
            "none".to_owned()
        } else {
            competitors.join(", ")
        },
    );
    html.push_str(
        "<h2>Summary</h2><table><thead><tr><th>provider</th><th>answers</th><th>failed</th>\
         <th>mention rate</th><th>share of voice</th><th>avg. sentiment</th>\
         <th>avg. first-mention rank</th><th>brand mentions</th></tr></thead><tbody>",
    );
    for block in &data.summary.providers {
        summary_row(&mut html, &block.provider, &block.summary, false);
    }
    summary_row(&mut html, "overall", &data.summary.overall, true);
    html.push_str("</tbody></table>");
    html.push_str("<h2>Chart</h2>");
    html.push_str(&chart_svg(data.summary));

    if !data.summary.overall.competitors.is_empty() {
        html.push_str(
            "<h2>Competitors</h2><table><thead><tr><th>competitor</th><th>mentions</th>\
             <th>mention rate</th><th>share of voice</th></tr></thead><tbody>",
        );
        for competitor in &data.summary.overall.competitors {
            let _ = write!(
                html,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&competitor.name),
                competitor.num_mentions,
                percent(competitor.mention_rate),
                optional_percent(competitor.share_of_voice),
            );
        }
        html.push_str("</tbody></table>");
    }

    let failures: Vec<&AuditItem> = data
        .items
        .iter()
        .filter(|item| item.status == AuditItemStatus::Failed)
        .collect();
    if !failures.is_empty() {
        let _ = write!(
            html,
            "<h2 class=\"failed\">Failed items ({})</h2><table><thead><tr><th>#</th>\
             <th>provider</th><th>prompt</th><th>code</th><th>message</th></tr></thead><tbody>",
            failures.len()
        );
        for item in failures {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                item.item_index,
                escape_html(&item.provider),
                escape_html(prompt_of(request, item)),
                escape_html(item.error_code.as_deref().unwrap_or("")),
                escape_html(item.error_message.as_deref().unwrap_or("")),
            );
        }
        html.push_str("</tbody></table>");
    }

    html.push_str(
        "<h2>Answers</h2><table><thead><tr><th>#</th><th>provider</th><th>prompt</th>\
         <th>mentioned</th><th>rank</th><th>sentiment</th><th>answer</th></tr></thead><tbody>",
    );
    for item in data.items {
        if item.status == AuditItemStatus::Failed {
            continue;
        }
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"answer\">{}</td></tr>",
            item.item_index,
            escape_html(&item.provider),
            escape_html(prompt_of(request, item)),
            if item.brand_mentioned { "yes" } else { "no" },
            item.first_mention_rank
                .map_or_else(|| "–".to_owned(), |rank| rank.to_string()),
            optional_fixed(item.brand_sentiment, 2),
            escape_html(item.answer.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table></body></html>");
    html
}

fn prompt_of<'a>(request: &'a AuditRequest, item: &AuditItem) -> &'a str {
    usize::try_from(item.prompt_index)
        .ok()
        .and_then(|index| request.prompts.get(index))
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use crate::summary_from_rows;
    use bulwark_store::AuditStatus;
    use serde_json::json;

    use super::*;

    fn item(item_index: i64, provider: &str, failed: bool) -> AuditItem {
        AuditItem {
            item_index,
            prompt_index: 0,
            provider: provider.to_owned(),
            sample: 0,
            status: if failed {
                AuditItemStatus::Failed
            } else {
                AuditItemStatus::Answered
            },
            answer: (!failed).then(|| "<b>Evil</b>, \"quoted\"\nline two, =cmd".to_owned()),
            answered_by: (!failed).then(|| provider.to_owned()),
            model: Some("sim-1".to_owned()),
            latency_ms: Some(3.0),
            input_tokens: None,
            output_tokens: None,
            brand_mentioned: !failed,
            is_list: false,
            first_mention_char: (!failed).then_some(0),
            first_mention_rank: (!failed).then_some(1),
            list_rank: None,
            brand_sentiment: (!failed).then_some(0.5),
            error_code: failed.then(|| "UPSTREAM_TIMEOUT".to_owned()),
            error_message: failed.then(|| "no answer within 1s".to_owned()),
            recorded_at_ms: 0,
        }
    }

    fn fixture() -> (Audit, AuditRequest, Vec<AuditItem>, Vec<AuditMention>) {
        let request = AuditRequest {
            brand: "<script>alert(1)</script>".to_owned(),
            aliases: vec!["A&B".to_owned()],
            competitors: vec!["Globex".to_owned()],
            prompts: vec!["Which is \"best\", really?".to_owned()],
            providers: vec!["sim".to_owned(), "down".to_owned()],
            samples_per_prompt: 1,
        };
        let audit = Audit {
            id: "audit-1".to_owned(),
            status: AuditStatus::Partial,
            request: json!({}),
            summary: None,
            num_items: 2,
            error_code: None,
            error_message: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
        };
        let items = vec![item(0, "sim", false), item(1, "down", true)];
        let mentions = vec![AuditMention {
            item_index: 0,
            mention_index: 0,
            entity: request.brand.clone(),
            is_brand: true,
            matched_text: "Evil".to_owned(),
            char_offset: 3,
            sentence_index: 0,
            list_rank: None,
            sentence: "<b>Evil</b>".to_owned(),
            sentiment: Some(0.5),
            sentiment_label: Some("positive".to_owned()),
        }];
        (audit, request, items, mentions)
    }

    /// Proves the page escapes a `<script>` brand and every other submitted text, and carries
    /// its chart as inline SVG with no external asset.
    #[test]
    fn html_escapes_input_and_is_self_contained() {
        let (audit, request, items, mentions) = fixture();
        let summary = summary_from_rows(&request, &items, &mentions);
        let data = ReportData {
            audit: &audit,
            request: &request,
            items: &items,
            mentions: &mentions,
            summary: &summary,
        };
        let page = html_page(&data);
        assert!(!page.contains("<script>"), "brand must be escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("A&amp;B"));
        assert!(page.contains("&lt;b&gt;Evil&lt;/b&gt;"));
        assert!(page.contains("Which is &quot;best&quot;, really?"));
        assert!(page.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(page.contains("UPSTREAM_TIMEOUT"));
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external assets"
        );
        assert!(page.contains("100.0%"), "the one answer mentions the brand");
    }

    /// Proves the CSV parses back with quotes, commas and newlines intact, one row per item,
    /// and that formula-like cells are defused.
    #[test]
    fn csv_round_trips() {
        let (audit, request, items, mentions) = fixture();
        let summary = summary_from_rows(&request, &items, &mentions);
        let data = ReportData {
            audit: &audit,
            request: &request,
            items: &items,
            mentions: &mentions,
            summary: &summary,
        };
        let text = items_csv(&data).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
        assert_eq!(&rows[0][column("prompt")], "Which is \"best\", really?");
        assert_eq!(
            &rows[0][column("answer")],
            "<b>Evil</b>, \"quoted\"\nline two, =cmd"
        );
        assert_eq!(&rows[0][column("num_brand_mentions")], "1");
        assert_eq!(&rows[1][column("status")], "failed");
        assert_eq!(&rows[1][column("error_code")], "UPSTREAM_TIMEOUT");
        assert_eq!(spreadsheet_safe("=HYPERLINK(1)"), "'=HYPERLINK(1)");

        let summary_text = summary_csv(&data).unwrap();
        let mut reader = csv::Reader::from_reader(summary_text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let names: Vec<&str> = rows.iter().map(|row| &row[0]).collect();
        assert_eq!(names, ["sim", "down", "overall"]);
        assert_eq!((&rows[2][3], &rows[2][4]), ("1", "1.0000"));
    }
}
