//! `bulwark-bench providers`: the latency the provider path adds over a direct call.
//!
//! Two comparisons, each run as open-loop load at a fixed rate:
//! - **HTTP**: a direct call with the OpenAI adapter to a zero-latency simulator over loopback,
//!   against the same call through the whole path (router, actor hop, call task, breaker,
//!   rate limiter, bulkhead, retry loop, per-attempt timeout);
//! - **in-process**: the same two paths around the in-process simulated engine, which removes
//!   the HTTP noise and leaves only what the path adds.
//!
//! Rounds alternate between the direct and the full path, so drift on a busy machine hits both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::{ProviderActor, ProviderActorParams, ProviderRoute, ProviderRouter};
use bulwark_core::Liveness;
use bulwark_providers::simulated::{
    FaultKnobs, SimulatedEngine, SimulatedEngineParams, SimulatedProvider, SimulatorParams,
    SimulatorServer,
};
use bulwark_providers::{
    BulkheadParams, CompletionRequest, HttpProviderParams, OpenAiProvider, Provider,
    RateLimitParams, ResilienceParams, ResilientProvider,
};
use clap::Args;
use ractor::Actor;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::measure::percentile;

/// Flags of `bulwark-bench providers`.
#[derive(Debug, Clone, Args)]
pub struct ProviderBenchArgs {
    /// Calls per round and path.
    #[arg(long, default_value_t = 5_000)]
    pub calls: usize,
    /// Calls started per second (open loop).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Rounds per path; direct and full rounds alternate.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// Latency percentiles of one path, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub num_calls: usize,
    pub num_errors: usize,
}

/// One comparison: a direct path, the full path, and what the full path adds.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub direct: Percentiles,
    pub full_path: Percentiles,
    pub added_p50_us: f64,
    pub added_p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderBenchReport {
    pub rate_per_second: u32,
    pub calls_per_round: usize,
    pub rounds: usize,
    pub http: Comparison,
    pub in_process: Comparison,
}

/// The resilience of the benchmarked path: every part active, none limiting.
fn bench_resilience() -> ResilienceParams {
    ResilienceParams {
        rate_limit: RateLimitParams {
            requests_per_minute: Some(100_000_000),
            tokens_per_minute: Some(u32::MAX / 2),
        },
        bulkhead: BulkheadParams {
            max_concurrent: 512,
            max_waiting: 4_096,
        },
        ..ResilienceParams::default()
    }
}

type CallFn = Arc<
    dyn Fn(CompletionRequest) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// Starts `calls` calls at `rate` per second, each timed from its start to its answer.
async fn open_loop(call: &CallFn, calls: usize, rate: u32) -> (Vec<Duration>, usize) {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for index in 0..calls {
        ticker.tick().await;
        let call = Arc::clone(call);
        let mut request = CompletionRequest::new("Which tools are best? Compare Acme and Globex.");
        request.seed = Some(index as u64 % 64);
        tasks.spawn(async move {
            let started = Instant::now();
            let ok = call(request).await;
            (started.elapsed(), ok)
        });
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut num_errors = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latency, ok)) = joined {
            latencies.push(latency);
            if !ok {
                num_errors += 1;
            }
        }
    }
    (latencies, num_errors)
}

fn percentiles(mut latencies: Vec<Duration>, num_errors: usize) -> Percentiles {
    latencies.sort_unstable();
    let at = |quantile: f64| percentile(&latencies, quantile).as_secs_f64() * 1e6;
    Percentiles {
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        max_us: at(1.0),
        num_calls: latencies.len(),
        num_errors,
    }
}

async fn compare(direct: &CallFn, full_path: &CallFn, args: &ProviderBenchArgs) -> Comparison {
    // Warm-up: connections, allocator, lazy statics.
    open_loop(direct, 200, args.rate).await;
    open_loop(full_path, 200, args.rate).await;
    let (mut direct_all, mut full_all) = (Vec::new(), Vec::new());
    let (mut direct_errors, mut full_errors) = (0, 0);
    for _ in 0..args.rounds.max(1) {
        let (latencies, errors) = open_loop(direct, args.calls, args.rate).await;
        direct_all.extend(latencies);
        direct_errors += errors;
        let (latencies, errors) = open_loop(full_path, args.calls, args.rate).await;
        full_all.extend(latencies);
        full_errors += errors;
    }
    let direct = percentiles(direct_all, direct_errors);
    let full_path = percentiles(full_all, full_errors);
    Comparison {
        added_p50_us: full_path.p50_us - direct.p50_us,
        added_p99_us: full_path.p99_us - direct.p99_us,
        direct,
        full_path,
    }
}

/// Spawns a provider actor for `provider` and returns the router that reaches it.
async fn spawn_path(name: &str, provider: Arc<dyn Provider>) -> anyhow::Result<ProviderRouter> {
    let resilient = ResilientProvider::new(provider, bench_resilience());
    let actor_name = format!("bench/provider-{name}");
    let params = ProviderActorParams {
        provider: Arc::new(resilient.clone()),
        liveness: Liveness::default(),
    };
    Actor::spawn(Some(actor_name.clone()), ProviderActor, params)
        .await
        .context("failed to spawn the provider actor")?;
    Ok(ProviderRouter::new(vec![ProviderRoute {
        name: name.to_owned(),
        actor_name,
        fallbacks: Vec::new(),
        call_timeout: Duration::from_secs(60),
        breaker_opt: Some(resilient.breaker().clone()),
    }]))
}

fn direct_call(provider: Arc<dyn Provider>) -> CallFn {
    Arc::new(move |request| {
        let provider = Arc::clone(&provider);
        Box::pin(async move { provider.complete(&request).await.is_ok() })
    })
}

fn routed_call(router: ProviderRouter, name: &'static str) -> CallFn {
    Arc::new(move |request| {
        let router = router.clone();
        Box::pin(async move { router.complete(name, request).await.is_ok() })
    })
}

/// Runs both comparisons and returns the report.
pub async fn run(args: &ProviderBenchArgs) -> anyhow::Result<ProviderBenchReport> {
    let server = SimulatorServer::start("127.0.0.1:0", SimulatorParams::default())
        .await
        .context("failed to start the simulator")?;
    let http_params = |name: &str| HttpProviderParams {
        name: name.to_owned(),
        base_url: server.base_url(),
        model: "bulwark-sim-1".to_owned(),
        api_key_opt: None,
        default_max_tokens: 256,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        max_response_bytes: bulwark_config::DEFAULT_MAX_RESPONSE_BYTES,
        allow_plain_http: true,
    };
    let direct_http: Arc<dyn Provider> = Arc::new(OpenAiProvider::new(http_params("direct"))?);
    let routed_http: Arc<dyn Provider> = Arc::new(OpenAiProvider::new(http_params("http"))?);
    let http_router = spawn_path("http", routed_http).await?;
    let http = compare(
        &direct_call(direct_http),
        &routed_call(http_router, "http"),
        args,
    )
    .await;

    let engine = SimulatedEngine::new(SimulatedEngineParams::default());
    let in_process = |name: &str| -> Arc<dyn Provider> {
        Arc::new(SimulatedProvider::new(
            name,
            engine.clone(),
            FaultKnobs::default(),
        ))
    };
    let local_router = spawn_path("local", in_process("local")).await?;
    let in_process = compare(
        &direct_call(in_process("direct-local")),
        &routed_call(local_router, "local"),
        args,
    )
    .await;
    server.stop().await;
    Ok(ProviderBenchReport {
        rate_per_second: args.rate,
        calls_per_round: args.calls,
        rounds: args.rounds,
        http,
        in_process,
    })
}
