//! `bulwark-bench amqp`: in one run, the broker's ceiling (raw lapin publish-with-confirms and
//! consume-with-ack on a quorum queue), Bulwark's end-to-end jobs/s and per-job latency over
//! RabbitMQ with results stored in the configured database (for 1-text and 32-text
//! `sentiment.analyze` jobs), and Bulwark's in-process sentiment throughput for comparison.
//! 1-text jobs run as a backlog, then paced at the Celery pipeline's half load and at half
//! their own backlog rate. The CPU of a local PostgreSQL and RabbitMQ is read beside the
//! node's. A measurement tool, not a test.

use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::ScoringChoice;
use std::collections::HashMap;

use bulwark_broker::{
    BrokerHealth, BrokerPublisher, BrokerSettings, CONTENT_TYPE_JSON, ENVELOPE_VERSION, Envelope,
    JobEvent, MessageTrace,
};
use bulwark_config::Config;
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
use tracing::debug;

use crate::measure::{ServerCpu, percentile, process_cpu_seconds, thread_cpu_seconds};
use bulwark::Service;

/// The arguments of `bulwark-bench amqp`.
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
    /// The publish rate of a paced phase; `None` for a backlog (as fast as possible).
    pub offered_jobs_per_second: Option<f64>,
    pub jobs_per_second: f64,
    pub texts_per_second: f64,
    /// Publish started to outcome event received by the producer, per job.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// The node's CPU (this process's user + system, minus the producer thread's) per job.
    pub cpu_ms_per_job: f64,
    /// The producer thread's CPU per job (publishing, confirms, reading events).
    pub producer_cpu_ms_per_job: f64,
    /// CPU per job of the PostgreSQL server (processes named `postgres`), when it runs on this
    /// machine; it competes with the node for the same cores.
    pub database_cpu_ms_per_job: Option<f64>,
    /// CPU per job of the RabbitMQ server (`beam.smp`), when it runs on this machine.
    pub broker_cpu_ms_per_job: Option<f64>,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct AmqpBenchReport {
    pub backend: &'static str,
    pub prefetch: u16,
    pub raw_publish_confirmed_per_second: f64,
    pub raw_consume_acked_per_second: f64,
    pub in_process_texts_per_second: f64,
    /// Process CPU per 1-text call in the in-process phase (as many calls in flight as the
    /// consumer's prefetch): the model and the pool.
    pub in_process_cpu_ms_per_text: f64,
    pub end_to_end: Vec<EndToEnd>,
    /// 1-text end-to-end jobs/s (backlog) over in-process texts/s.
    pub one_text_ratio_to_in_process: f64,
    /// The node's CPU per 1-text job minus CPU per in-process 1-text call: broker, database
    /// and actors.
    pub cpu_ms_per_job_outside_model: f64,
    /// 1-text jobs/s over the Celery pipeline's 290 texts/s on this machine class (the
    /// figure the RabbitMQ issue gives; `make bench-celery` measures a Celery pipeline beside
    /// this benchmark).
    pub one_text_ratio_to_celery_reference: f64,
}

/// The Celery pipeline's throughput (RabbitMQ + PostgreSQL + onnxruntime, one result row
/// per job) on this machine class, as given by the RabbitMQ issue.
const CELERY_REFERENCE_TEXTS_PER_SECOND: f64 = 290.0;

/// Runs the whole benchmark.
pub async fn run(config: &Config, args: &AmqpBenchArgs) -> anyhow::Result<AmqpBenchReport> {
    let mut config = config.clone();
    anyhow::ensure!(
        config.amqp.url.is_some(),
        "amqp.url is not set (set AMQP_URL)"
    );
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    config.amqp.namespace = format!("bulwark-bench-{}", &run_id[20..]);
    let settings = bulwark::broker::broker_settings(&config, "bulwark-bench")
        .context("amqp.url is not set")?;
    let (raw_publish, raw_consume) = raw_ceiling(&settings, args.jobs).await?;

    let service = Service::start(&config).await?;
    // The lexicon fallback is a hundred times cheaper than the model: measuring it would
    // report numbers that say nothing about sentiment jobs.
    if !service.sentiment_engines.starts_with("onnx") {
        let engines = service.sentiment_engines.clone();
        service.shutdown().await?;
        anyhow::bail!(
            "the ONNX sentiment model is not loaded (engines: {engines}): run from the project \
             folder after `make runtime model`, or set BULWARK_MODEL_DIR and ORT_DYLIB_PATH"
        );
    }
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
        // As many in flight as a consumer holds (its prefetch): the same batching chance.
        .buffer_unordered(usize::from(config.amqp.prefetch.max(1)));
    let results: Vec<_> = calls.collect().await;
    let in_process_seconds = in_process_started.elapsed().as_secs_f64();
    let in_process_cpu = process_cpu_seconds() - cpu_before;
    anyhow::ensure!(
        results.iter().all(Result::is_ok),
        "in-process scoring failed"
    );
    let in_process_texts_per_second = args.jobs as f64 / in_process_seconds;

    let mut end_to_end = Vec::new();
    let saturated = end_to_end_phase(EndToEndParams {
        settings: &settings,
        run_id: format!("{run_id}-1"),
        num_jobs: args.jobs,
        texts_per_job: 1,
        pace: None,
    })
    .await?;
    // Half load: paced at half the backlog rate, as the Celery p99 was measured.
    let half_rate = saturated.jobs_per_second / 2.0;
    end_to_end.push(saturated);
    // About ten seconds of 1-text jobs at `rate` (at most `--jobs`, at least 100).
    let paced = |run_suffix: &'static str, rate: f64| {
        end_to_end_phase(EndToEndParams {
            settings: &settings,
            run_id: format!("{run_id}-{run_suffix}"),
            num_jobs: args.jobs.min((rate * 10.0) as usize).max(100),
            texts_per_job: 1,
            pace: Some(rate),
        })
    };
    // The Celery pipeline's own half load, so the two p99s are taken at the same offered load.
    end_to_end.push(paced("1-celery-half", CELERY_REFERENCE_TEXTS_PER_SECOND / 2.0).await?);
    end_to_end.push(paced("1-paced", half_rate).await?);
    end_to_end.push(
        end_to_end_phase(EndToEndParams {
            settings: &settings,
            run_id: format!("{run_id}-32"),
            num_jobs: (args.jobs / 8).max(1),
            texts_per_job: 32,
            pace: None,
        })
        .await?,
    );
    let backend = service.store.backend().as_str();
    service.shutdown().await?;
    delete_topology(&settings).await?;

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
        one_text_ratio_to_celery_reference: one_text.jobs_per_second
            / CELERY_REFERENCE_TEXTS_PER_SECOND,
        end_to_end,
    })
}

/// Deletes the run's namespace (its queues and exchanges), so runs do not pile quorum queues
/// up in the broker.
async fn delete_topology(settings: &bulwark_broker::BrokerSettings) -> anyhow::Result<()> {
    let connection = bulwark_broker::connect(settings, "bench-cleanup").await?;
    let channel = connection.create_channel().await?;
    settings.topology.delete(&channel).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
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
    settings: &'a BrokerSettings,
    run_id: String,
    num_jobs: usize,
    texts_per_job: usize,
    /// Jobs per second to publish at; `None` publishes as fast as confirms allow (16 in
    /// flight), which measures throughput under a backlog.
    pace: Option<f64>,
}

/// What the producer thread saw.
struct ProducerReport {
    /// Publish (confirmed) to outcome event received, per job, in milliseconds.
    latencies_ms: Vec<f64>,
    num_succeeded: usize,
    seconds: f64,
    /// CPU of the producer thread (publishing, confirms, reading events): not the node's.
    cpu_seconds: f64,
}

/// Runs one phase: a producer on its own thread (its own runtime and broker connection, so its
/// CPU can be told apart from the node's) publishes the jobs as any producer would and reads
/// their outcome events from `<ns>.events`; the node in this process does the work.
async fn end_to_end_phase(params: EndToEndParams<'_>) -> anyhow::Result<EndToEnd> {
    let texts: Vec<String> = (0..params.texts_per_job)
        .map(|index| format!("benchmark sentence {index}: the service was quick and pleasant"))
        .collect();
    let job = ProducerJob {
        settings: params.settings.clone(),
        payload: json!({ "texts": texts }),
        key_prefix: format!("bench-{}-", params.run_id),
        num_jobs: params.num_jobs,
        pace: params.pace,
    };
    let cpu_before = process_cpu_seconds();
    let servers_before = ServerCpu::read();
    let producer = std::thread::spawn(move || -> anyhow::Result<ProducerReport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(produce(job))
    });
    let report = tokio::task::spawn_blocking(move || producer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let node_cpu = process_cpu_seconds() - cpu_before - report.cpu_seconds;
    let servers = ServerCpu::read().since(&servers_before);
    let per_job = |seconds: f64| seconds * 1000.0 / params.num_jobs as f64;
    anyhow::ensure!(
        report.num_succeeded == params.num_jobs,
        "{} of {} jobs succeeded",
        report.num_succeeded,
        params.num_jobs
    );
    let mut sorted = report.latencies_ms;
    sorted.sort_by(f64::total_cmp);
    Ok(EndToEnd {
        texts_per_job: params.texts_per_job,
        num_jobs: params.num_jobs,
        offered_jobs_per_second: params.pace,
        jobs_per_second: params.num_jobs as f64 / report.seconds,
        texts_per_second: (params.num_jobs * params.texts_per_job) as f64 / report.seconds,
        latency_p50_ms: percentile(&sorted, 0.5),
        latency_p99_ms: percentile(&sorted, 0.99),
        cpu_ms_per_job: per_job(node_cpu),
        producer_cpu_ms_per_job: per_job(report.cpu_seconds),
        database_cpu_ms_per_job: servers.database.map(per_job),
        broker_cpu_ms_per_job: servers.broker.map(per_job),
    })
}

/// What the producer thread publishes.
struct ProducerJob {
    settings: BrokerSettings,
    payload: serde_json::Value,
    key_prefix: String,
    num_jobs: usize,
    pace: Option<f64>,
}

/// Publishes the jobs with confirms and waits for every outcome event.
async fn produce(job: ProducerJob) -> anyhow::Result<ProducerReport> {
    let cpu_before = thread_cpu_seconds();
    let connection = bulwark_broker::connect(&job.settings, "bench-events").await?;
    let channel = connection.create_channel().await?;
    let events_queue = job
        .settings
        .topology
        .declare_event_listener(&channel, "job.#")
        .await?;
    let mut events = channel
        .basic_consume(
            events_queue.as_str().into(),
            "bench-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let publisher = std::rc::Rc::new(BrokerPublisher::new(
        job.settings.clone(),
        BrokerHealth::default(),
    ));
    publisher.channel().await?;
    let published_at: std::rc::Rc<std::cell::RefCell<HashMap<String, Instant>>> =
        std::rc::Rc::default();
    let started = Instant::now();
    let publish_one = |index: usize| {
        let publisher = publisher.clone();
        let published_at = published_at.clone();
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: format!("{}{index}", job.key_prefix),
            kind: "sentiment.analyze".to_owned(),
            payload: job.payload.clone(),
            idempotency_key: None,
            deadline: None,
            priority: None,
            run_at: None,
            timeout_ms: None,
        };
        async move {
            let sent = Instant::now();
            debug!(id = %envelope.id, "publishing job");
            publisher
                .publish_envelope(&envelope, CONTENT_TYPE_JSON, &MessageTrace::default())
                .await?;
            published_at.borrow_mut().insert(envelope.id, sent);
            anyhow::Ok(())
        }
    };
    let local = tokio::task::LocalSet::new();
    let publishing = local.run_until(async {
        match job.pace {
            None => {
                let results: Vec<_> = futures::stream::iter(0..job.num_jobs)
                    .map(publish_one)
                    .buffer_unordered(16)
                    .collect()
                    .await;
                results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
            }
            Some(rate) => {
                let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                let mut in_flight = Vec::with_capacity(job.num_jobs);
                for index in 0..job.num_jobs {
                    ticker.tick().await;
                    in_flight.push(tokio::task::spawn_local(publish_one(index)));
                }
                for publish in in_flight {
                    publish.await??;
                }
            }
        }
        anyhow::Ok(())
    });
    let mut latencies_ms = Vec::with_capacity(job.num_jobs);
    let mut num_succeeded = 0;
    let mut seen = std::collections::HashSet::new();
    let collecting = async {
        let deadline = Instant::now() + Duration::from_secs(900);
        while seen.len() < job.num_jobs {
            let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
            let delivery = next
                .context("timed out waiting for outcome events")?
                .context("the events consumer ended")??;
            let received = Instant::now();
            let event: JobEvent = serde_json::from_slice(&delivery.data)?;
            debug!(
                id = event.idempotency_key.as_deref().unwrap_or(""),
                "outcome event received"
            );
            let Some(key) = event.idempotency_key else {
                continue;
            };
            if !key.starts_with(&job.key_prefix) || !seen.insert(key.clone()) {
                continue;
            }
            if event.status == "succeeded" {
                num_succeeded += 1;
            }
            // An event can arrive before its publish confirm was recorded; count it from now.
            let sent = published_at.borrow().get(&key).copied().unwrap_or(received);
            latencies_ms.push(received.duration_since(sent).as_secs_f64() * 1000.0);
        }
        anyhow::Ok(())
    };
    let (published, collected) = tokio::join!(publishing, collecting);
    published?;
    collected?;
    let seconds = started.elapsed().as_secs_f64();
    publisher.close().await;
    let _ = connection.close(200, "done".into()).await;
    Ok(ProducerReport {
        latencies_ms,
        num_succeeded,
        seconds,
        cpu_seconds: thread_cpu_seconds() - cpu_before,
    })
}
