//! The steady workload and what is observed of it: a producer submitting jobs over HTTP at a
//! fixed rate (a client that retries on another node with the same idempotency key, as a real
//! one would), a sampler reading every node's `/ready`, the queue from the database and each
//! process's memory and CPU, and, on RabbitMQ, a consumer of the outcome events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::cluster::ADMIN_KEY;

/// One submission attempt, over HTTP or AMQP.
#[derive(Debug, Clone, Serialize)]
pub struct Submission {
    /// Milliseconds since the run began.
    pub at_ms: u64,
    pub latency_ms: f64,
    /// The HTTP status (202 for a confirmed publish); 0 when no answer came (refused, reset,
    /// timed out, not confirmed).
    pub status: u16,
    /// Published to the broker rather than submitted over HTTP.
    pub amqp: bool,
}

/// One sample of the system.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// `/ready` status per node; 0 when it did not answer.
    pub ready: Vec<u16>,
    /// Jobs finished (any final status); `None` when the database did not answer.
    pub num_finished_opt: Option<i64>,
    /// The workload's jobs queued or running (not those a fault injected, e.g. the panic
    /// flood's).
    pub backlog_opt: Option<i64>,
    /// Resident memory per node process, KiB (0 when not running).
    pub rss_kib: Vec<u64>,
    /// CPU time per node process so far, ms (0 when not running).
    pub cpu_ms: Vec<u64>,
}

/// A job the producer had accepted (a 2xx over HTTP, a publisher confirm over AMQP), by the
/// idempotency key it was submitted with.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub key: String,
}

/// What the workload saw, shared between its tasks and the scenario.
#[derive(Debug, Default)]
pub struct Observed {
    pub submissions: Vec<Submission>,
    pub samples: Vec<Sample>,
    pub accepted: Vec<Accepted>,
    /// HTTP submissions that never got a 2xx after every retry (the client knows; not lost).
    pub num_given_up: u64,
    /// AMQP publishes never confirmed after every retry.
    pub num_given_up_amqp: u64,
    /// Outcome events per job id: (status, attempts) of each event.
    pub events: HashMap<String, Vec<(String, i64)>>,
}

/// What the workload is started with.
#[derive(Debug, Clone)]
pub struct WorkloadParams {
    pub node_urls: Vec<String>,
    /// Submissions per second.
    pub rate: f64,
    /// One job in this many is a provider call (the rest score texts).
    pub provider_every: u64,
    pub pool: sqlx::PgPool,
    /// The broker URL and namespace: events are consumed from `<ns>.events`, and every
    /// other submission is published to `<ns>.jobs` as a job envelope instead of over HTTP.
    pub events_opt: Option<(String, String)>,
}

/// The running workload.
#[derive(Debug)]
pub struct Workload {
    pub started: Instant,
    pub observed: Arc<Mutex<Observed>>,
    /// The node processes' pids, updated by the scenario when it restarts one.
    pub pids: Arc<Mutex<Vec<Option<u32>>>>,
    stop: tokio::sync::watch::Sender<bool>,
    producer: JoinHandle<()>,
    sampler: JoinHandle<()>,
    events_opt: Option<JoinHandle<()>>,
    submissions_done: Arc<tokio::sync::Semaphore>,
}

/// The most submissions in flight at once.
const MAX_IN_FLIGHT: u32 = 256;

impl Workload {
    pub async fn start(params: WorkloadParams, pids: Vec<Option<u32>>) -> anyhow::Result<Workload> {
        let started = Instant::now();
        let observed = Arc::new(Mutex::new(Observed::default()));
        let pids = Arc::new(Mutex::new(pids));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let submissions_done = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT as usize));
        let events_opt = match &params.events_opt {
            Some((url, namespace)) => {
                Some(spawn_events_consumer(url, namespace, observed.clone()).await?)
            }
            None => None,
        };
        let amqp = Arc::new(AmqpProducer {
            broker_opt: params.events_opt.clone(),
            channel: tokio::sync::Mutex::new(None),
        });
        let producer = tokio::spawn(produce(ProducerParts {
            amqp,
            params: params.clone(),
            started,
            observed: observed.clone(),
            stop_rx,
            client: http_client(Duration::from_secs(5))?,
            slots: submissions_done.clone(),
        }));
        let sampler = tokio::spawn(sample(
            params,
            started,
            observed.clone(),
            pids.clone(),
            http_client(Duration::from_millis(800))?,
        ));
        Ok(Workload {
            started,
            observed,
            pids,
            stop,
            producer,
            sampler,
            events_opt,
            submissions_done,
        })
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn set_pid(&self, index: usize, pid_opt: Option<u32>) {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)[index] = pid_opt;
    }

    /// Stops submitting, waits for the submissions in flight, and keeps sampling until every
    /// accepted job is finished or `drain_timeout` passed; returns what was observed.
    pub async fn finish(self, pool: &sqlx::PgPool, drain_timeout: Duration) -> Observed {
        let _ = self.stop.send(true);
        let _ = self.producer.await;
        let _ = self.submissions_done.acquire_many(MAX_IN_FLIGHT).await;
        // Every accepted job must have a finished row: a published message not yet consumed
        // has no row at all, so an empty queue table is not enough.
        let keys: Vec<String> = self
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accepted
            .iter()
            .map(|job| job.key.clone())
            .collect();
        let deadline = Instant::now() + drain_timeout;
        while Instant::now() < deadline {
            let finished: Result<i64, _> = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE idempotency_key = ANY($1) \
                 AND status IN ('succeeded', 'failed', 'dead', 'cancelled')",
            )
            .bind(&keys)
            .fetch_one(pool)
            .await;
            let unfinished: Result<i64, _> = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')",
            )
            .fetch_one(pool)
            .await;
            if finished.is_ok_and(|num| num as usize >= keys.len()) && matches!(unfinished, Ok(0)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A last sample after the drain, then the events still in the broker.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.sampler.abort();
        if let Some(events) = self.events_opt {
            tokio::time::sleep(Duration::from_millis(500)).await;
            events.abort();
        }
        let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *observed)
    }
}

struct ProducerParts {
    amqp: Arc<AmqpProducer>,
    params: WorkloadParams,
    started: Instant,
    observed: Arc<Mutex<Observed>>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    slots: Arc<tokio::sync::Semaphore>,
    client: reqwest::Client,
}

async fn produce(parts: ProducerParts) {
    let client = parts.client.clone();
    let interval = Duration::from_secs_f64(1.0 / parts.params.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut sequence: u64 = 0;
    while !*parts.stop_rx.borrow() {
        ticker.tick().await;
        sequence += 1;
        let Ok(permit) = parts.slots.clone().acquire_owned().await else {
            return;
        };
        let submit = SubmitParts {
            amqp_opt: (parts.amqp.broker_opt.is_some() && sequence % 2 == 1)
                .then(|| parts.amqp.clone()),
            client: client.clone(),
            node_urls: parts.params.node_urls.clone(),
            started: parts.started,
            observed: parts.observed.clone(),
            key: format!("chaos-{run}-{sequence}"),
            sequence,
            provider: parts.params.provider_every > 0
                && sequence.is_multiple_of(parts.params.provider_every),
        };
        tokio::spawn(async move {
            submit_with_retries(submit).await;
            drop(permit);
        });
    }
}

struct SubmitParts {
    /// Set: published as an envelope to the broker instead of submitted over HTTP.
    amqp_opt: Option<Arc<AmqpProducer>>,
    client: reqwest::Client,
    node_urls: Vec<String>,
    started: Instant,
    observed: Arc<Mutex<Observed>>,
    key: String,
    sequence: u64,
    provider: bool,
}

/// Submits one job, trying the next node on a failure (same idempotency key), up to six
/// attempts over about three seconds.
async fn submit_with_retries(parts: SubmitParts) {
    let (kind, payload) = if parts.provider {
        (
            "provider.complete",
            serde_json::json!({"provider": "sim", "prompt": format!("How good is Acme? ({})", parts.sequence)}),
        )
    } else {
        (
            "sentiment.analyze",
            serde_json::json!({"texts": [format!("order {} arrived fast, great service", parts.sequence), "the box was damaged"]}),
        )
    };
    let body = serde_json::json!({"kind": kind, "payload": payload, "idempotency_key": parts.key});
    for attempt in 0..6usize {
        let url = &parts.node_urls[(parts.sequence as usize + attempt) % parts.node_urls.len()];
        let sent = Instant::now();
        let at_ms = parts.started.elapsed().as_millis() as u64;
        let status = match &parts.amqp_opt {
            Some(amqp) => amqp.publish(&parts.key, kind, &payload).await,
            None => {
                let response = parts
                    .client
                    .post(format!("{url}/v1/jobs"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await;
                response.map_or(0, |response| response.status().as_u16())
            }
        };
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let accepted = {
            let mut observed = parts
                .observed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            observed.submissions.push(Submission {
                at_ms,
                latency_ms,
                status,
                amqp: parts.amqp_opt.is_some(),
            });
            let accepted = (200..300).contains(&status);
            if accepted {
                observed.accepted.push(Accepted {
                    key: parts.key.clone(),
                });
            }
            accepted
        };
        if accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1))).await;
    }
    let mut observed = parts
        .observed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if parts.amqp_opt.is_some() {
        observed.num_given_up_amqp += 1;
    } else {
        observed.num_given_up += 1;
    }
}

async fn sample(
    params: WorkloadParams,
    started: Instant,
    observed: Arc<Mutex<Observed>>,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    client: reqwest::Client,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let at_ms = started.elapsed().as_millis() as u64;
        let probes = params.node_urls.iter().map(|url| {
            let client = client.clone();
            async move {
                match client.get(format!("{url}/ready")).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                }
            }
        });
        let ready = futures::future::join_all(probes).await;
        let counts = tokio::time::timeout(
            Duration::from_millis(800),
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled')), \
                 count(*) FILTER (WHERE status IN ('queued', 'running') \
                 AND idempotency_key LIKE 'chaos-%') FROM jobs",
            )
            .fetch_one(&params.pool),
        )
        .await;
        let (num_finished_opt, backlog_opt) = match counts {
            Ok(Ok((finished, backlog))) => (Some(finished), Some(backlog)),
            _ => (None, None),
        };
        let current_pids = pids.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (rss_kib, cpu_ms) = current_pids
            .iter()
            .map(|pid_opt| pid_opt.map_or((0, 0), process_usage))
            .unzip();
        observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .samples
            .push(Sample {
                at_ms,
                ready,
                num_finished_opt,
                backlog_opt,
                rss_kib,
                cpu_ms,
            });
    }
}

/// Publishes job envelopes to `<ns>.jobs` on one confirm channel, reconnecting after a
/// failure, as an outside producer in any language would.
struct AmqpProducer {
    /// The broker URL and namespace.
    broker_opt: Option<(String, String)>,
    channel: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

impl AmqpProducer {
    /// Publishes one envelope and waits for the broker's confirm; returns 202 when confirmed,
    /// 0 when the broker refused it or could not be reached (the caller retries).
    async fn publish(&self, key: &str, kind: &str, payload: &serde_json::Value) -> u16 {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let Some((url, namespace)) = &self.broker_opt else {
            return 0;
        };
        let mut slot = self.channel.lock().await;
        if slot
            .as_ref()
            .is_none_or(|(_, channel)| !channel.status().connected())
        {
            let connected = async {
                let connection =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok::<_, lapin::Error>((connection, channel))
            };
            match tokio::time::timeout(Duration::from_secs(2), connected).await {
                Ok(Ok(pair)) => *slot = Some(pair),
                _ => return 0,
            }
        }
        let Some((_, channel)) = slot.as_ref() else {
            return 0;
        };
        let channel = channel.clone();
        drop(slot);
        let envelope = serde_json::json!({
            "v": 1, "id": key, "kind": kind, "payload": payload, "idempotency_key": key,
        });
        let routing_key =
            bulwark_broker::Topology::job_routing_key(kind, bulwark_broker::PriorityBand::Normal);
        let exchange = format!("{namespace}.jobs");
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(key.into())
            .with_delivery_mode(2);
        let body = envelope.to_string();
        let published = async {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await?
                .await
        };
        match tokio::time::timeout(Duration::from_secs(5), published).await {
            Ok(Ok(confirmation)) if confirmation.is_ack() => 202,
            _ => {
                *self.channel.lock().await = None;
                0
            }
        }
    }
}

/// Returns an HTTP client whose requests give up after `timeout` (connecting after a second).
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1).min(timeout))
        .build()
        .context("failed to build an HTTP client")
}

/// Returns a process's resident memory (KiB) and CPU time (ms) from `/proc`.
fn process_usage(pid: u32) -> (u64, u64) {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let cpu_ms = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) * 10)
        })
        .unwrap_or(0);
    (rss_kib, cpu_ms)
}

/// Binds a queue of its own to `<ns>.events` (every routing key) and records each outcome
/// event's job, status and attempts.
async fn spawn_events_consumer(
    url: &str,
    namespace: &str,
    observed: Arc<Mutex<Observed>>,
) -> anyhow::Result<JoinHandle<()>> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let events_exchange = format!("{namespace}.events");
    // The exchange is declared by the nodes; declare it here too in case none started yet.
    channel
        .exchange_declare(
            events_exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            events_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "chaos-events".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let _connection = connection;
        while let Some(Ok(delivery)) = consumer.next().await {
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&delivery.data) {
                let job_id = event["job_id"].as_str().unwrap_or_default().to_owned();
                let status = event["status"].as_str().unwrap_or_default().to_owned();
                let attempts = event["attempts"].as_i64().unwrap_or(0);
                observed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .events
                    .entry(job_id)
                    .or_default()
                    .push((status, attempts));
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    }))
}
