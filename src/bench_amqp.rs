//! `bulwark bench amqp`: in one run, the broker's ceiling (raw lapin publish-with-confirms and
//! consume-with-ack on a quorum queue), Bulwark's end-to-end jobs/s and per-job latency over
//! RabbitMQ with results stored in the configured database (for 1-text and 32-text
//! `sentiment.analyze` jobs), and Bulwark's in-process sentiment throughput for comparison.
//! A measurement tool, not a test.

use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::ScoringChoice;
use bulwark_broker::{
    BrokerHealth, BrokerPublisher, CONTENT_TYPE_JSON, ENVELOPE_VERSION, Envelope, MessageTrace,
};
use bulwark_config::Config;
use bulwark_store::{JobFilter, JobStatus, Store};
use clap::Args;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use serde::Serialize;
use serde_json::json;

use crate::Service;

/// The arguments of `bulwark bench amqp`.
#[derive(Debug, Clone, Args)]
pub struct AmqpBenchArgs {
    /// Jobs per end-to-end phase (and messages in the raw phase).
    #[arg(long, default_value_t = 2_000)]
    pub jobs: usize,
}

/// One end-to-end phase.
#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub texts_per_job: usize,
    pub num_jobs: usize,
    pub jobs_per_second: f64,
    pub texts_per_second: f64,
    /// Row created (first delivery) to result stored, per job.
    pub latency_p50_ms: i64,
    pub latency_p99_ms: i64,
    /// Process CPU (user + system) per job during the phase, all of it.
    pub cpu_ms_per_job: f64,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct AmqpBenchReport {
    pub backend: &'static str,
    pub prefetch: u16,
    pub raw_publish_confirmed_per_second: f64,
    pub raw_consume_acked_per_second: f64,
    pub in_process_texts_per_second: f64,
    /// Process CPU per 1-text call in the in-process phase: the model and the pool.
    pub in_process_cpu_ms_per_text: f64,
    pub end_to_end: Vec<EndToEnd>,
    /// 1-text end-to-end jobs/s over in-process texts/s.
    pub one_text_ratio_to_in_process: f64,
    /// CPU per 1-text job minus CPU per in-process 1-text call: broker, database and actors.
    pub cpu_ms_per_job_outside_model: f64,
}

/// Runs the whole benchmark.
pub async fn run(config: &Config, args: &AmqpBenchArgs) -> anyhow::Result<AmqpBenchReport> {
    let mut config = config.clone();
    anyhow::ensure!(
        config.amqp.url.is_some(),
        "amqp.url is not set (set AMQP_URL)"
    );
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    config.amqp.namespace = format!("bulwark-bench-{}", &run_id[20..]);
    let settings =
        crate::broker::broker_settings(&config, "bulwark-bench").context("amqp.url is not set")?;
    let (raw_publish, raw_consume) = raw_ceiling(&settings, args.jobs).await?;

    let service = Service::start(&config).await?;
    wait_ready(&service).await?;
    let texts: Vec<String> = (0..args.jobs)
        .map(|index| format!("benchmark sentence {index}: the service was quick and pleasant"))
        .collect();
    let cpu_before = process_cpu_seconds();
    let in_process_started = Instant::now();
    let calls = futures::stream::iter(texts.iter().cloned())
        .map(|text| {
            let pool = service.sentiment.clone();
            async move { pool.analyze(vec![text], ScoringChoice::default()).await }
        })
        .buffer_unordered(config.jobs.concurrency.max(1));
    let results: Vec<_> = calls.collect().await;
    let in_process_seconds = in_process_started.elapsed().as_secs_f64();
    let in_process_cpu = process_cpu_seconds() - cpu_before;
    anyhow::ensure!(
        results.iter().all(Result::is_ok),
        "in-process scoring failed"
    );
    let in_process_texts_per_second = args.jobs as f64 / in_process_seconds;

    let publisher = BrokerPublisher::new(settings, BrokerHealth::default());
    let mut end_to_end = Vec::new();
    for texts_per_job in [1, 32] {
        let phase = end_to_end_phase(EndToEndParams {
            store: &service.store,
            publisher: &publisher,
            run_id: &format!("{run_id}-{texts_per_job}"),
            num_jobs: if texts_per_job == 1 {
                args.jobs
            } else {
                (args.jobs / 8).max(1)
            },
            texts_per_job,
        })
        .await?;
        end_to_end.push(phase);
    }
    publisher.close().await;
    let backend = service.store.backend().as_str();
    service.shutdown().await?;

    let in_process_cpu_ms_per_text = in_process_cpu * 1000.0 / args.jobs as f64;
    let one_text = &end_to_end[0];
    Ok(AmqpBenchReport {
        backend,
        prefetch: config.amqp.prefetch,
        raw_publish_confirmed_per_second: raw_publish,
        raw_consume_acked_per_second: raw_consume,
        in_process_texts_per_second,
        in_process_cpu_ms_per_text,
        one_text_ratio_to_in_process: one_text.jobs_per_second / in_process_texts_per_second,
        cpu_ms_per_job_outside_model: one_text.cpu_ms_per_job - in_process_cpu_ms_per_text,
        end_to_end,
    })
}

async fn wait_ready(service: &Service) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{}/ready", service.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "node not ready within 60s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `num_messages` to a fresh quorum queue with confirms (all in flight at once),
/// then consumes and acks them; returns both rates.
async fn raw_ceiling(
    settings: &bulwark_broker::BrokerSettings,
    num_messages: usize,
) -> anyhow::Result<(f64, f64)> {
    let connection = bulwark_broker::connect(settings, "bench-raw").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("{}.bench-raw", settings.topology.namespace);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    let body = serde_json::to_vec(&json!({"v": 1, "id": "raw", "kind": "sentiment.analyze",
        "payload": {"texts": ["benchmark sentence: the service was quick and pleasant"]}}))?;
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(num_messages);
    for _ in 0..num_messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        anyhow::ensure!(
            confirm.await? == Confirmation::Ack(None),
            "raw publish not confirmed"
        );
    }
    let publish_rate = num_messages as f64 / started.elapsed().as_secs_f64();

    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..num_messages {
        let delivery = consumer
            .next()
            .await
            .context("raw consumer ended early")??;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let consume_rate = num_messages as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok((publish_rate, consume_rate))
}

struct EndToEndParams<'a> {
    store: &'a Store,
    publisher: &'a BrokerPublisher,
    run_id: &'a str,
    num_jobs: usize,
    texts_per_job: usize,
}

/// Publishes jobs as a producer would (16 publishes in flight), waits for every result row,
/// and measures throughput, latency and CPU.
async fn end_to_end_phase(params: EndToEndParams<'_>) -> anyhow::Result<EndToEnd> {
    let texts: Vec<String> = (0..params.texts_per_job)
        .map(|index| format!("benchmark sentence {index}: the service was quick and pleasant"))
        .collect();
    let payload = json!({ "texts": texts });
    let key_prefix = format!("bench-{}-", params.run_id);
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let publishes = futures::stream::iter(0..params.num_jobs)
        .map(|index| {
            let envelope = Envelope {
                v: ENVELOPE_VERSION,
                id: format!("{key_prefix}{index}"),
                kind: "sentiment.analyze".to_owned(),
                payload: payload.clone(),
                idempotency_key: None,
                deadline: None,
            };
            async move {
                params
                    .publisher
                    .publish_envelope(&envelope, CONTENT_TYPE_JSON, &MessageTrace::default())
                    .await
            }
        })
        .buffer_unordered(16);
    let published: Vec<_> = publishes.collect().await;
    anyhow::ensure!(
        published.iter().all(Result::is_ok),
        "some benchmark jobs were not published"
    );
    let deadline = started + Duration::from_secs(900);
    let latencies = loop {
        let latencies = finished_latencies(params.store, &key_prefix).await?;
        if latencies.len() >= params.num_jobs {
            break latencies;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} jobs finished",
            latencies.len(),
            params.num_jobs
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let percentile = |fraction: f64| sorted[((sorted.len() - 1) as f64 * fraction) as usize];
    Ok(EndToEnd {
        texts_per_job: params.texts_per_job,
        num_jobs: params.num_jobs,
        jobs_per_second: params.num_jobs as f64 / seconds,
        texts_per_second: (params.num_jobs * params.texts_per_job) as f64 / seconds,
        latency_p50_ms: percentile(0.5),
        latency_p99_ms: percentile(0.99),
        cpu_ms_per_job: cpu * 1000.0 / params.num_jobs as f64,
    })
}

/// Returns created-to-finished milliseconds of this run's succeeded jobs.
async fn finished_latencies(store: &Store, key_prefix: &str) -> anyhow::Result<Vec<i64>> {
    let mut latencies = Vec::new();
    let mut filter = JobFilter {
        status: Some(JobStatus::Succeeded),
        kind: Some("sentiment.analyze".to_owned()),
        limit: 500,
        ..JobFilter::default()
    };
    loop {
        let page = store.list_jobs(&filter).await?;
        latencies.extend(
            page.jobs
                .iter()
                .filter(|job| {
                    job.idempotency_key
                        .as_deref()
                        .is_some_and(|key| key.starts_with(key_prefix))
                })
                .filter_map(|job| Some(job.finished_at_ms? - job.created_at_ms)),
        );
        let Some(cursor) = page.next_cursor else {
            return Ok(latencies);
        };
        filter.before_id = Some(cursor);
    }
}

/// Returns this process's user + system CPU seconds from `/proc/self/stat` (100 ticks/s).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields; `fields` starts at the 3rd.
    (ticks(11) + ticks(12)) / 100.0
}
