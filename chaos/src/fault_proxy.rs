//! A TCP fault proxy per node and upstream (PostgreSQL, RabbitMQ, the answer engine) with
//! Toxiproxy's toxic model: latency with jitter and bandwidth applied per chunk in each
//! direction, `limit_data` (a connection cut once a number of bytes passed), and a disabled
//! proxy (connections closed, new ones refused). The machine's kernel has no `netem`; this is
//! where network faults come from.
//!
//! Written here rather than taken from `noxious` (the Rust port of Toxiproxy), which the first
//! game days used: noxious rebuilds every connection's toxic chain when a toxic is added or
//! removed and drops the chunks its toxics hold at that moment, so healing a latency fault
//! silently lost AMQP deliveries on connections that stayed open (measured: 7 to 24 jobs
//! per run left unacked on the broker, never seen by the node), which no real network does
//! to a live TCP connection; its `limit_data` toxic panicked on connections open when it was
//! added, and its `timeout` toxic could not be healed. Here a fault is a setting each
//! connection's pumps read per chunk: changing it rebuilds nothing, so no byte is lost, and a
//! healed latency fault flushes what it held at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::cluster::free_port;

/// How long a proxy brought back up may wait for its port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Chunks read at once from either side (Toxiproxy reads up to 32 KiB).
const CHUNK_BYTES: usize = 32 * 1024;

/// Chunks a direction holds while a latency or bandwidth fault delays them.
const MAX_HELD_CHUNKS: usize = 4096;

/// A fault to put on a proxy, in Toxiproxy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFault {
    /// Every chunk delayed `latency_ms` ± `jitter_ms`, both ways (in order, so a stream's
    /// throughput is not bounded by the delay).
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// At most `kib_per_second`, each way.
    Bandwidth { kib_per_second: u64 },
    /// The proxy is down (Toxiproxy's disabled proxy): open connections are closed and new
    /// ones refused until healed: the upstream is unreachable from this node.
    Down,
    /// Each connection is cut once `bytes` more passed through it, either way (resets
    /// mid-stream; Toxiproxy's `limit_data`).
    CutAfter { bytes: u64 },
}

/// What every connection of a proxy reads its fault from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ProxyState {
    fault_opt: Option<NetworkFault>,
    /// Counts injections, so a connection knows when a `CutAfter` budget starts anew.
    generation: u64,
}

/// One running proxy in front of `upstream`.
pub struct FaultProxy {
    pub name: String,
    /// `127.0.0.1:<port>`, where clients connect instead of the upstream.
    pub listen: String,
    upstream: String,
    state: watch::Sender<ProxyState>,
    /// The accept loop; `None` while the proxy is down.
    acceptor: tokio::sync::Mutex<Option<AbortOnDropHandle<()>>>,
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

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`host:port`).
    pub async fn start(name: &str, upstream: &str) -> anyhow::Result<FaultProxy> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let (state, _) = watch::channel(ProxyState::default());
        let proxy = FaultProxy {
            name: name.to_owned(),
            listen,
            upstream: upstream.to_owned(),
            state,
            acceptor: tokio::sync::Mutex::new(None),
        };
        *proxy.acceptor.lock().await = Some(proxy.accept_loop().await?);
        Ok(proxy)
    }

    /// Puts `fault` on the proxy, open connections included.
    pub async fn inject(&self, fault: NetworkFault) -> anyhow::Result<()> {
        let mut acceptor = self.acceptor.lock().await;
        if acceptor.is_none() {
            bail!("proxy {} is down", self.name);
        }
        if fault == NetworkFault::Down {
            // Dropping the accept loop closes the listener: new connections are refused.
            *acceptor = None;
        }
        self.state.send_modify(|state| {
            state.fault_opt = Some(fault);
            state.generation += 1;
        });
        Ok(())
    }

    /// Removes the fault: a proxy that was down listens again on the same port; delayed
    /// chunks go through at once.
    pub async fn heal(&self) -> anyhow::Result<()> {
        let mut acceptor = self.acceptor.lock().await;
        self.state.send_modify(|state| state.fault_opt = None);
        if acceptor.is_none() {
            *acceptor = Some(self.accept_loop().await?);
        }
        Ok(())
    }

    /// Binds the listen address (again) and accepts connections until dropped.
    async fn accept_loop(&self) -> anyhow::Result<AbortOnDropHandle<()>> {
        let deadline = std::time::Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match TcpListener::bind(&self.listen).await {
                Ok(listener) => break listener,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!(
                            "failed to start the fault proxy {} on {}",
                            self.name, self.listen
                        )
                    });
                }
            }
        };
        let upstream = self.upstream.clone();
        let state = self.state.subscribe();
        Ok(AbortOnDropHandle::new(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, state).await;
                    }
                });
            }
        })))
    }
}

/// Carries one connection both ways until both sides closed, or a fault cuts it.
async fn relay(client: TcpStream, server: TcpStream, state: watch::Receiver<ProxyState>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut = CancellationToken::new();
    let generation = state.borrow().generation;
    // Bytes passed since the current `CutAfter` began, both ways.
    let passed = Arc::new(std::sync::Mutex::new((generation, 0u64)));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = Direction {
        state: state.clone(),
        cut: cut.clone(),
        passed: passed.clone(),
    };
    let downstream = Direction { state, cut, passed };
    tokio::join!(
        upstream.pump(client_read, server_write),
        downstream.pump(server_read, client_write),
    );
}

/// One direction of a connection.
struct Direction {
    state: watch::Receiver<ProxyState>,
    /// Cancelled when a fault cuts the connection: both directions stop and drop their ends.
    cut: CancellationToken,
    passed: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl Direction {
    /// Reads chunks as they come and writes each when its fault allows, in order.
    async fn pump(
        self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        mut writer: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (held_tx, mut held_rx) =
            tokio::sync::mpsc::channel::<(Instant, Bytes)>(MAX_HELD_CHUNKS);
        let read = async {
            let mut buffer = vec![0u8; CHUNK_BYTES];
            loop {
                let num_read = match reader.read(&mut buffer).await {
                    // A clean end: the write side passes the half-close on.
                    Ok(0) => return,
                    Ok(num_read) => num_read,
                    Err(_) => {
                        self.cut.cancel();
                        return;
                    }
                };
                let chunk = Bytes::copy_from_slice(&buffer[..num_read]);
                if held_tx.send((Instant::now(), chunk)).await.is_err() {
                    return;
                }
            }
        };
        let write = async {
            let mut state = self.state.clone();
            while let Some((arrived, chunk)) = held_rx.recv().await {
                if !self.wait_for_turn(&mut state, arrived, chunk.len()).await {
                    return;
                }
                if writer.write_all(&chunk).await.is_err() {
                    self.cut.cancel();
                    return;
                }
                if self.over_budget(&state, chunk.len() as u64) {
                    self.cut.cancel();
                    return;
                }
            }
            // The other side finished sending: pass the half-close on.
            let _ = writer.shutdown().await;
        };
        let down = async {
            let mut state = self.state.clone();
            loop {
                if state.borrow_and_update().fault_opt == Some(NetworkFault::Down) {
                    return;
                }
                if state.changed().await.is_err() {
                    // The proxy is gone: so are its connections.
                    return;
                }
            }
        };
        tokio::select! {
            () = async { tokio::join!(read, write); } => {}
            () = down => self.cut.cancel(),
            () = self.cut.cancelled() => {}
        }
    }

    /// Waits until the chunk that arrived at `arrived` may be written under the current fault
    /// (rechecked whenever the fault changes, so a healed fault releases it at once); returns
    /// false when the connection is cut meanwhile.
    async fn wait_for_turn(
        &self,
        state: &mut watch::Receiver<ProxyState>,
        arrived: Instant,
        num_bytes: usize,
    ) -> bool {
        let delay = match state.borrow_and_update().fault_opt {
            Some(NetworkFault::Latency {
                latency_ms,
                jitter_ms,
            }) => {
                let jitter = if jitter_ms == 0 {
                    0
                } else {
                    rand::rng().random_range(0..=2 * jitter_ms)
                };
                Duration::from_millis((latency_ms + jitter).saturating_sub(jitter_ms))
            }
            Some(NetworkFault::Bandwidth { kib_per_second }) => {
                Duration::from_secs_f64(num_bytes as f64 / (kib_per_second.max(1) * 1024) as f64)
            }
            _ => Duration::ZERO,
        };
        let ready_at = match state.borrow().fault_opt {
            Some(NetworkFault::Bandwidth { .. }) => Instant::now() + delay,
            _ => arrived + delay,
        };
        tokio::select! {
            () = tokio::time::sleep_until(ready_at) => true,
            // Healed or changed: the chunk goes now (a new fault applies from the next one).
            _ = state.changed() => true,
            () = self.cut.cancelled() => false,
        }
    }

    /// Counts `num_bytes` against a `CutAfter` fault; true once its budget is spent.
    fn over_budget(&self, state: &watch::Receiver<ProxyState>, num_bytes: u64) -> bool {
        let current = *state.borrow();
        let Some(NetworkFault::CutAfter { bytes }) = current.fault_opt else {
            return false;
        };
        let mut passed = self
            .passed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if passed.0 != current.generation {
            *passed = (current.generation, 0);
        }
        passed.1 += num_bytes;
        passed.1 >= bytes
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

    /// Starts an echo server; returns its address.
    async fn echo_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        upstream
    }

    /// Proves a proxy passes bytes through, delays them under a latency toxic, refuses
    /// connections while down, and passes bytes again once healed, on the same port.
    #[tokio::test]
    async fn proxy_delays_goes_down_and_heals() {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = echo_server().await;
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

    /// Proves healing a latency fault loses no byte on an open connection: 200 numbered chunks
    /// sent through 100 ± 50 ms of latency, the fault healed halfway, and every byte comes
    /// back, in order (noxious dropped the chunks its toxic held when it was removed).
    #[tokio::test]
    async fn healing_a_latency_fault_loses_nothing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = FaultProxy::start("echo", &echo_server().await)
            .await
            .unwrap();
        let client = tokio::net::TcpStream::connect(&proxy.listen).await.unwrap();
        let (mut read_half, mut write_half) = client.into_split();
        proxy
            .inject(NetworkFault::Latency {
                latency_ms: 100,
                jitter_ms: 50,
            })
            .await
            .unwrap();
        let sent: Vec<u8> = (0..200u32).flat_map(|index| [index as u8; 100]).collect();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            for chunk in to_send.chunks(100) {
                write_half.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            write_half
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy.heal().await.unwrap();
        let _write_half = writer.await.unwrap();
        let mut received = vec![0u8; sent.len()];
        tokio::time::timeout(Duration::from_secs(10), read_half.read_exact(&mut received))
            .await
            .expect("every byte comes back")
            .unwrap();
        assert!(received == sent, "the bytes came back in order");
    }

    /// Proves `CutAfter` closes an open connection once that many bytes passed, and that a
    /// healed proxy carries new connections in full.
    #[tokio::test]
    async fn a_cut_closes_the_connection_after_its_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = FaultProxy::start("echo", &echo_server().await)
            .await
            .unwrap();
        let mut client = tokio::net::TcpStream::connect(&proxy.listen).await.unwrap();
        proxy
            .inject(NetworkFault::CutAfter { bytes: 1_000 })
            .await
            .unwrap();
        let mut num_received = 0;
        let mut buffer = [0u8; 4096];
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..100 {
                if client.write_all(&[7u8; 100]).await.is_err() {
                    return;
                }
                match client.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => num_received += read,
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "the connection was cut, not left hanging");
        assert!(
            num_received < 10_000,
            "cut after about 1,000 bytes, got {num_received} back"
        );
        proxy.heal().await.unwrap();
        let mut client = tokio::net::TcpStream::connect(&proxy.listen).await.unwrap();
        client.write_all(&[9u8; 5_000]).await.unwrap();
        let mut back = vec![0u8; 5_000];
        client.read_exact(&mut back).await.unwrap();
        assert!(back.iter().all(|byte| *byte == 9));
    }
}
