//! `bulwark enqueue --file jobs.jsonl`: submits one job per line through `POST /v1/jobs/batch`
//! of a running node, with the key in `BULWARK_API_KEY`, and reports every line that was not
//! stored. A line is the body of `POST /v1/jobs` (`{"kind", "payload", "idempotency_key"?}`);
//! a line that is not a JSON object is reported with its number and never sent.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Most jobs the node takes in one batch.
pub const MAX_BATCH_JOBS: usize = 1000;

/// Largest request body sent, under the node's default body limit (1 MiB); a node with a
/// lower limit answers `413`, and the batch is split.
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// The arguments of `bulwark enqueue`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// One job per line, as the body of `POST /v1/jobs`; `-` reads stdin. Blank lines are
    /// skipped.
    #[arg(long, value_name = "FILE.jsonl")]
    pub file: PathBuf,
    /// Jobs per request, 1 to 1000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
    /// The node to talk to.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "BULWARK_URL")]
    pub url: String,
}

/// One non-blank line of the input that is a JSON object: sent as it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLine {
    /// From 1.
    pub line_number: usize,
    pub text: String,
}

/// A line that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line_number: usize,
    /// `invalid` or `conflict`.
    pub status: &'static str,
    pub reason: String,
}

/// What `bulwark enqueue` did, line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueSummary {
    pub num_created: usize,
    pub num_existing: usize,
    pub num_conflict: usize,
    pub num_invalid: usize,
    /// In line order.
    pub problems: Vec<LineProblem>,
}

impl EnqueueSummary {
    fn add_problem(&mut self, line_number: usize, status: &'static str, reason: String) {
        match status {
            "conflict" => self.num_conflict += 1,
            _ => self.num_invalid += 1,
        }
        self.problems.push(LineProblem {
            line_number,
            status,
            reason,
        });
    }
}

/// Splits the input into the lines to send and the problems of the lines that are not JSON
/// objects.
pub fn read_lines(text: &str) -> (Vec<JobLine>, Vec<LineProblem>) {
    let mut job_lines = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let reason = match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(_)) => {
                job_lines.push(JobLine {
                    line_number,
                    text: trimmed.to_owned(),
                });
                continue;
            }
            Ok(_) => "not a JSON object".to_owned(),
            Err(error) => format!("not JSON: {error}"),
        };
        problems.push(LineProblem {
            line_number,
            status: "invalid",
            reason,
        });
    }
    (job_lines, problems)
}

/// Cuts the lines into batches of at most `batch_size` lines and [`MAX_BATCH_BYTES`] bytes
/// (a longer line goes alone); returns each batch's range of `lines`.
pub fn plan_batches(lines: &[JobLine], batch_size: usize) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut num_bytes = 0;
    for (index, line) in lines.iter().enumerate() {
        let line_bytes = line.text.len() + 1;
        let full = index - start >= batch_size || num_bytes + line_bytes > MAX_BATCH_BYTES;
        if index > start && full {
            batches.push(start..index);
            start = index;
            num_bytes = 0;
        }
        num_bytes += line_bytes;
    }
    if start < lines.len() {
        batches.push(start..lines.len());
    }
    batches
}

/// Returns the body of `POST /v1/jobs/batch` for these lines, written as they are.
fn batch_body(lines: &[JobLine]) -> String {
    let mut body = String::from("{\"jobs\":[");
    for (index, line) in lines.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&line.text);
    }
    body.push_str("]}");
    body
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    results: Vec<ItemAnswer>,
}

#[derive(Debug, Deserialize)]
struct ItemAnswer {
    index: usize,
    status: String,
    error: Option<String>,
}

/// What the node answered one batch.
enum Sent {
    Answered(BatchAnswer),
    /// `413`: the batch is over the node's body or batch limit.
    TooLarge(String),
}

/// Talks to the node's batch endpoint.
struct BatchClient {
    client: reqwest::Client,
    endpoint: String,
    key_opt: Option<String>,
}

impl BatchClient {
    async fn send(&self, lines: &[JobLine]) -> anyhow::Result<Sent> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(batch_body(lines));
        if let Some(key) = &self.key_opt {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach bulwark at {}: {error} (is `bulwark serve` running there? pass --url)",
                self.endpoint
            )
        })?;
        let status = response.status();
        if status.is_success() {
            let answer = response
                .json()
                .await
                .context("the node's answer is not a batch result")?;
            return Ok(Sent::Answered(answer));
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("no message").to_owned();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Ok(Sent::TooLarge(message));
        }
        let code = body["code"].as_str().unwrap_or("UNKNOWN");
        anyhow::bail!("{} {code}: {message}", status.as_u16())
    }
}

/// Sends every line in batches and returns what happened to each. A batch the node finds too
/// large is split in two; a single line too large is reported invalid. Any other refusal of a
/// batch stops the run: the lines before it are stored, and running again with idempotency
/// keys stores the rest without doubles.
async fn send_all(
    client: &BatchClient,
    lines: &[JobLine],
    batch_size: usize,
    summary: &mut EnqueueSummary,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<std::ops::Range<usize>> =
        plan_batches(lines, batch_size).into_iter().collect();
    while let Some(range) = pending.pop_front() {
        let batch = &lines[range.clone()];
        let answer = match client.send(batch).await.with_context(|| {
            format!(
                "the batch of lines {} to {} was refused; lines before it are stored",
                batch[0].line_number,
                batch[batch.len() - 1].line_number
            )
        })? {
            Sent::Answered(answer) => answer,
            Sent::TooLarge(message) if batch.len() == 1 => {
                summary.add_problem(batch[0].line_number, "invalid", message);
                continue;
            }
            Sent::TooLarge(_) => {
                let middle = range.start + batch.len() / 2;
                pending.push_front(middle..range.end);
                pending.push_front(range.start..middle);
                continue;
            }
        };
        for item in answer.results {
            let Some(line) = batch.get(item.index) else {
                anyhow::bail!("the node answered job {} of a smaller batch", item.index);
            };
            let reason = item.error.unwrap_or_default();
            match item.status.as_str() {
                "created" => summary.num_created += 1,
                "existing" => summary.num_existing += 1,
                "conflict" => summary.add_problem(line.line_number, "conflict", reason),
                _ => summary.add_problem(line.line_number, "invalid", reason),
            }
        }
    }
    Ok(())
}

/// Reads the file (or stdin for `-`).
async fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
    if file == std::path::Path::new("-") {
        let mut text = String::new();
        tokio::io::stdin()
            .read_to_string(&mut text)
            .await
            .context("failed to read stdin")?;
        return Ok(text);
    }
    tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("failed to read {}", file.display()))
}

/// Runs `bulwark enqueue`: prints each line not stored (`line N: invalid: reason`) on stderr and
/// the counts on stdout. Exit 0 when every line was stored or already there, 1 otherwise.
pub async fn run(args: &EnqueueArgs) -> anyhow::Result<ExitCode> {
    let text = read_input(&args.file).await?;
    let (lines, malformed) = read_lines(&text);
    let client = BatchClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("failed to build the HTTP client")?,
        endpoint: format!("{}/v1/jobs/batch", args.url.trim_end_matches('/')),
        key_opt: std::env::var(crate::ops_client::API_KEY_ENV)
            .ok()
            .filter(|key| !key.is_empty()),
    };
    let mut summary = EnqueueSummary::default();
    for problem in malformed {
        summary.add_problem(problem.line_number, problem.status, problem.reason);
    }
    let sent = send_all(&client, &lines, usize::from(args.batch_size), &mut summary).await;
    summary.problems.sort_by_key(|problem| problem.line_number);
    for problem in &summary.problems {
        eprintln!(
            "line {}: {}: {}",
            problem.line_number, problem.status, problem.reason
        );
    }
    println!(
        "created {}, existing {}, conflict {}, invalid {}",
        summary.num_created, summary.num_existing, summary.num_conflict, summary.num_invalid
    );
    sent?;
    Ok(if summary.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(line_number: usize, text: &str) -> JobLine {
        JobLine {
            line_number,
            text: text.to_owned(),
        }
    }

    /// Proves blank lines are skipped, objects are kept as written with their line numbers,
    /// and anything else is reported with its line number.
    #[test]
    fn lines_are_read_with_their_numbers() {
        let text = "{\"kind\":\"a\"}\n\n  {\"kind\": \"b\"}  \n[1]\n{oops\n";
        let (lines, problems) = read_lines(text);
        assert_eq!(
            lines,
            vec![line(1, "{\"kind\":\"a\"}"), line(3, "{\"kind\": \"b\"}")]
        );
        assert_eq!(problems.len(), 2);
        assert_eq!(
            (problems[0].line_number, problems[0].reason.as_str()),
            (4, "not a JSON object")
        );
        assert_eq!(problems[1].line_number, 5);
        assert!(problems[1].reason.starts_with("not JSON"), "{problems:?}");
    }

    /// Proves batches hold at most the batch size and stay under the byte budget, a line over
    /// the budget goes alone, and every line is in exactly one batch, in order.
    #[test]
    fn batches_are_cut_by_count_and_bytes() {
        let small: Vec<JobLine> = (1..=5).map(|number| line(number, "{}")).collect();
        assert_eq!(plan_batches(&small, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(plan_batches(&small, 1000), vec![0..5]);
        assert!(plan_batches(&[], 10).is_empty());

        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        let huge = "y".repeat(MAX_BATCH_BYTES + 1);
        let mixed = vec![
            line(1, &big),
            line(2, &big),
            line(3, "{}"),
            line(4, &huge),
            line(5, "{}"),
        ];
        assert_eq!(plan_batches(&mixed, 1000), vec![0..1, 1..3, 3..4, 4..5]);
    }

    /// Proves the request body is the lines as written, inside `{"jobs": [...]}`.
    #[test]
    fn the_body_holds_the_lines_as_written() {
        let body = batch_body(&[line(1, "{\"kind\":\"a\"}"), line(2, "{\"kind\": \"b\"}")]);
        assert_eq!(body, "{\"jobs\":[{\"kind\":\"a\"},{\"kind\": \"b\"}]}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["jobs"][1]["kind"], "b");
    }
}
