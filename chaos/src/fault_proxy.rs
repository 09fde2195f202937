//! A TCP fault proxy per node and upstream (PostgreSQL, RabbitMQ, the answer engine), built on
//! `noxious`, the Rust port of Toxiproxy: its proxy runner and its toxics (latency and jitter,
//! bandwidth, timeout — a black hole, the partition —, slow close, slicer, data limit), driven
//! in process instead of through a Toxiproxy server, so a game day needs no extra daemon.
//! The machine's kernel has no `netem`; this is where network faults come from.

use anyhow::{Context, bail};
use noxious::proxy::{ProxyConfig, ProxyRunner, Runner, Toxics};
use noxious::signal::{Close, Stop, Stopper};
use noxious::socket::TcpListener;
use noxious::toxic::{
    StreamDirection, Toxic, ToxicEvent, ToxicEventKind, ToxicEventResult, ToxicKind,
};

use crate::cluster::free_port;

/// How long adding or removing a toxic may take (noxious rebuilds every open connection).
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One running proxy in front of `upstream`.
pub struct FaultProxy {
    pub name: String,
    /// `127.0.0.1:<port>`, where clients connect instead of the upstream.
    pub listen: String,
    upstream: String,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// A started proxy runner: where its toxic events go, and what stops it.
struct Running {
    events: bmrng::RequestSender<ToxicEvent, ToxicEventResult>,
    stopper: Stopper,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FaultProxy")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().take() {
            running.stopper.stop();
        }
    }
}

/// A fault to put on a proxy, in Toxiproxy's terms.
#[derive(Debug, Clone, Copy)]
pub enum NetworkFault {
    /// Every byte delayed `latency_ms` ± `jitter_ms`, both ways.
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// At most `kib_per_second`, both ways.
    Bandwidth { kib_per_second: u64 },
    /// The proxy is down (Toxiproxy's disabled proxy): open connections are closed and new
    /// ones refused until healed: the upstream is unreachable from this node. (noxious's
    /// `timeout` toxic, the black hole, leaves the proxy refusing every connection after it
    /// is removed, so partitions are made this way.)
    Down,
    /// Each connection is cut after `bytes` (resets mid-stream).
    CutAfter { bytes: u64 },
}

impl NetworkFault {
    /// Returns the toxics that make the fault, one per direction.
    fn toxics(self) -> Vec<Toxic> {
        let kind = match self {
            NetworkFault::Latency {
                latency_ms,
                jitter_ms,
            } => ToxicKind::Latency {
                latency: latency_ms,
                jitter: jitter_ms,
            },
            NetworkFault::Bandwidth { kib_per_second } => ToxicKind::Bandwidth {
                rate: kib_per_second,
            },
            NetworkFault::Down => return Vec::new(),
            NetworkFault::CutAfter { bytes } => ToxicKind::LimitData { bytes },
        };
        [StreamDirection::Upstream, StreamDirection::Downstream]
            .into_iter()
            .map(|direction| Toxic {
                kind,
                name: format!("chaos-{direction}"),
                toxicity: 1.0,
                direction,
            })
            .collect()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`host:port`).
    pub async fn start(name: &str, upstream: &str) -> anyhow::Result<FaultProxy> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let running = run(name, &listen, upstream).await?;
        Ok(FaultProxy {
            name: name.to_owned(),
            listen,
            upstream: upstream.to_owned(),
            running: tokio::sync::Mutex::new(Some(running)),
        })
    }

    /// Puts `fault` on the proxy (existing connections included).
    pub async fn inject(&self, fault: NetworkFault) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if matches!(fault, NetworkFault::Down) {
            if let Some(stopped) = running.take() {
                stopped.stopper.stop();
            }
            return Ok(());
        }
        let Some(running) = running.as_ref() else {
            bail!("proxy {} is down", self.name);
        };
        for toxic in fault.toxics() {
            let event = ToxicEvent::new(self.name.clone(), ToxicEventKind::AddToxic(toxic));
            send(&self.name, &running.events, event).await?;
        }
        Ok(())
    }

    /// Removes every fault: a proxy that was down listens again on the same port; toxics are
    /// removed (noxious rebuilds each open connection once the data its toxics hold has
    /// passed).
    pub async fn heal(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        match running.as_ref() {
            None => {
                *running = Some(run(&self.name, &self.listen, &self.upstream).await?);
                Ok(())
            }
            Some(started) => {
                let event = ToxicEvent::new(self.name.clone(), ToxicEventKind::RemoveAllToxics);
                send(&self.name, &started.events, event).await
            }
        }
    }
}

/// Binds `listen` and runs a proxy to `upstream` on it until stopped.
async fn run(name: &str, listen: &str, upstream: &str) -> anyhow::Result<Running> {
    let config = ProxyConfig {
        name: name.to_owned(),
        listen: listen.to_owned(),
        upstream: upstream.to_owned(),
        enabled: true,
        rand_seed: None,
    };
    // A proxy brought back up binds the port its previous runner just released.
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let (listener, info) = loop {
        match ProxyRunner::initialize_proxy::<TcpListener>(config.clone(), Toxics::empty()).await {
            Ok(bound) => break bound,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("failed to start the fault proxy {name} on {listen}")
                });
            }
        }
    };
    let (stop, stopper) = Stop::new();
    let (_close, closer) = Close::new();
    let (events, event_receiver) = bmrng::channel(16);
    tokio::spawn(async move {
        let _ = ProxyRunner::run_proxy(listener, info, event_receiver, stop, closer).await;
    });
    Ok(Running { events, stopper })
}

/// Sends a toxic event and waits for the runner's answer, at most [`EVENT_TIMEOUT`].
async fn send(
    name: &str,
    events: &bmrng::RequestSender<ToxicEvent, ToxicEventResult>,
    event: ToxicEvent,
) -> anyhow::Result<()> {
    match tokio::time::timeout(EVENT_TIMEOUT, events.send_receive(event)).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => bail!("proxy {name} refused a toxic event: {error:?}"),
        Ok(Err(error)) => bail!("proxy {name} is gone: {error:?}"),
        Err(_) => bail!("proxy {name} did not apply a toxic event within {EVENT_TIMEOUT:?}"),
    }
}

/// Returns `url` (`scheme://[user@]host:port/…`) with `host:port` replaced by `authority`.
pub fn through(url: &str, authority: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL with a scheme")?;
    let (before_path, path) = rest
        .split_once('/')
        .map_or((rest, ""), |(head, tail)| (head, tail));
    let userinfo = before_path.rsplit_once('@').map(|(user, _)| user);
    let userinfo = userinfo.map_or(String::new(), |user| format!("{user}@"));
    Ok(format!("{scheme}://{userinfo}{authority}/{path}"))
}

/// Returns the `host:port` of `url`, with `default_port` when it names none.
pub fn authority_of(url: &str, default_port: u16) -> anyhow::Result<String> {
    let (_, rest) = url.split_once("://").context("a URL with a scheme")?;
    let before_path = rest.split('/').next().unwrap_or(rest);
    let host_port = before_path
        .rsplit_once('@')
        .map_or(before_path, |(_, host)| host);
    Ok(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a URL is sent through the proxy keeping its user, path and query.
    #[test]
    fn urls_go_through_the_proxy() {
        assert_eq!(
            through(
                "postgres://postgres@127.0.0.1:5432/chaos_1",
                "127.0.0.1:40000"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:40000/chaos_1"
        );
        assert_eq!(
            through("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1:40001").unwrap(),
            "amqp://guest:guest@127.0.0.1:40001/%2f"
        );
        assert_eq!(
            authority_of("amqp://guest:guest@localhost/%2f", 5672).unwrap(),
            "localhost:5672"
        );
    }

    /// Proves each toxic fault is one toxic per direction, and `Down` is none (the proxy stops).
    #[test]
    fn faults_are_toxics_both_ways() {
        let toxics = NetworkFault::Latency {
            latency_ms: 50,
            jitter_ms: 5,
        }
        .toxics();
        assert_eq!(toxics.len(), 2);
        assert_ne!(toxics[0].direction, toxics[1].direction);
        assert!(NetworkFault::Down.toxics().is_empty());
    }

    /// Proves a proxy passes bytes through, delays them under a latency toxic, refuses
    /// connections while down, and passes bytes again once healed, on the same port.
    #[tokio::test]
    async fn proxy_delays_goes_down_and_heals() {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start("echo", &upstream).await.unwrap();
        let round_trip = |listen: String| async move {
            let mut client = tokio::net::TcpStream::connect(&listen).await?;
            let sent = Instant::now();
            client.write_all(b"ping").await?;
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).await?;
            assert_eq!(&answer, b"ping");
            Ok::<Duration, std::io::Error>(sent.elapsed())
        };
        let direct = round_trip(proxy.listen.clone()).await.unwrap();
        proxy
            .inject(NetworkFault::Latency {
                latency_ms: 200,
                jitter_ms: 0,
            })
            .await
            .unwrap();
        let delayed = round_trip(proxy.listen.clone()).await.unwrap();
        assert!(
            delayed >= Duration::from_millis(400),
            "200 ms each way: {delayed:?} (direct {direct:?})"
        );
        proxy.heal().await.unwrap();
        proxy.inject(NetworkFault::Down).await.unwrap();
        assert!(
            round_trip(proxy.listen.clone()).await.is_err(),
            "nothing gets through a proxy that is down"
        );
        proxy.heal().await.unwrap();
        let healed = round_trip(proxy.listen.clone()).await.unwrap();
        assert!(healed < Duration::from_millis(200), "healed: {healed:?}");
    }
}
