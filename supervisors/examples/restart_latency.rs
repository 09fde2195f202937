//! Measures the time from a child's crash to its restarted incarnation answering a message,
//! over many crashes, and prints p50/p99/max in JSON. See docs/benchmarks.md.
//!
//! `cargo run --release -p bulwark-supervisors --example restart_latency -- [crashes] [backoff_ms]`

use std::time::{Duration, Instant};

use bulwark_supervisors::{
    RestartIntensity, SupervisionStrategy, SupervisorActor, SupervisorParams, actor_spec,
    install_panic_hook,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

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

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1_000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let num_crashes: usize = args.next().map_or(Ok(1_000), |text| text.parse())?;
    let backoff_ms: u64 = args.next().map_or(Ok(0), |text| text.parse())?;
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
    let (supervisor, _handle) =
        Actor::spawn(Some("bench/sup".to_owned()), SupervisorActor, params).await?;
    let mut samples = Vec::with_capacity(num_crashes);
    for _ in 0..num_crashes {
        let old: ActorRef<CrashyMsg> = ractor::registry::where_is(child_name.clone())
            .ok_or("child registered")?
            .into();
        let crashed_at = Instant::now();
        old.cast(CrashyMsg::Panic)?;
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
    println!(
        "{}",
        serde_json::json!({
            "crashes": num_crashes,
            "backoff_ms": backoff_ms,
            "p50_ms": percentile(&samples, 0.50),
            "p99_ms": percentile(&samples, 0.99),
            "max_ms": percentile(&samples, 1.0),
        })
    );
    supervisor.stop(None);
    Ok(())
}
