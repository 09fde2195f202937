//! `bulwark-bench restart`: the time from a child's crash to its restarted incarnation
//! answering a message, over many crashes, as p50/p99/max in milliseconds.

use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_supervisors::{
    RestartIntensity, SupervisionStrategy, SupervisorActor, SupervisorParams, actor_spec,
    install_panic_hook,
};
use clap::Args;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use crate::measure::percentile;

/// Options of `bulwark-bench restart`.
#[derive(Debug, Clone, Args)]
pub struct RestartBenchArgs {
    /// How many times the child is made to crash.
    #[arg(long, default_value_t = 1_000)]
    pub crashes: usize,
    /// The supervisor's restart backoff (0: the machinery alone).
    #[arg(long, default_value_t = 0)]
    pub backoff_ms: u64,
}

/// The result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct RestartBenchReport {
    pub crashes: usize,
    pub backoff_ms: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct CrashyActor;

#[derive(Debug)]
enum CrashyMsg {
    Ping(RpcReplyPort<()>),
    Panic,
}

impl Actor for CrashyActor {
    type Msg = CrashyMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _arguments: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CrashyMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            CrashyMsg::Panic => panic!("restart_latency: crash on purpose"),
        }
        Ok(())
    }
}

/// Crashes a supervised child `crashes` times and times each restart until the new
/// incarnation answers.
pub async fn run(args: &RestartBenchArgs) -> anyhow::Result<RestartBenchReport> {
    let num_crashes = args.crashes;
    let backoff_ms = args.backoff_ms;
    install_panic_hook();
    // Keep the panic hook's own printing out of the measurement's output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("crash on purpose") {
            hook(info);
        }
    }));
    let child_name = "bench/crashy".to_owned();
    let params = SupervisorParams {
        name: "bench".to_owned(),
        children: vec![actor_spec(&child_name, CrashyActor, (), None)],
        strategy: SupervisionStrategy::OneForOne,
        // A window shorter than the gap between crashes: every restart is the first in its
        // window, so it waits exactly `backoff_ms`.
        intensity: RestartIntensity {
            max_restarts: 1_000_000,
            within: Duration::from_nanos(1),
        },
        backoff_base: Duration::from_millis(backoff_ms),
        backoff_max: Duration::from_millis(backoff_ms.max(1)),
        hang_timeout: Duration::from_secs(60),
        heartbeat: Duration::from_secs(1),
    };
    let (supervisor, _handle) = Actor::spawn(Some("bench/sup".to_owned()), SupervisorActor, params)
        .await
        .context("failed to start the supervisor")?;
    let mut samples = Vec::with_capacity(num_crashes);
    for _ in 0..num_crashes {
        let old: ActorRef<CrashyMsg> = ractor::registry::where_is(child_name.clone())
            .context("the child is not registered")?
            .into();
        let crashed_at = Instant::now();
        old.cast(CrashyMsg::Panic)
            .context("failed to send the crash")?;
        loop {
            if let Some(cell) = ractor::registry::where_is(child_name.clone())
                && cell.get_id() != old.get_id()
            {
                let new: ActorRef<CrashyMsg> = cell.into();
                if ractor::call_t!(new, CrashyMsg::Ping, 1_000).is_ok() {
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        samples.push(crashed_at.elapsed());
    }
    samples.sort();
    supervisor.stop(None);
    let milliseconds = |quantile: f64| percentile(&samples, quantile).as_secs_f64() * 1_000.0;
    Ok(RestartBenchReport {
        crashes: num_crashes,
        backoff_ms,
        p50_ms: milliseconds(0.50),
        p99_ms: milliseconds(0.99),
        max_ms: milliseconds(1.0),
    })
}
