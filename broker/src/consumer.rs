use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

use bulwark_actors::DescribeMessage;
use bulwark_core::{HandledMessage, Liveness};

use crate::dead_letters::store_delivery;
use crate::delivery::process_delivery;
use crate::{
    BrokerHealth, BrokerSettings, DeadLetterSink, DeliveryContext, PriorityBand, SharedConnection,
};

/// Consumes one queue of a job kind: its job queue of one priority band, or its dead-letter
/// queue, on its own channel of the node's shared consumer connection. Each delivery is
/// processed in its own task; the channel's prefetch bounds how many run at once (the mailbox
/// bound). When the connection is lost the actor fails, so its supervisor restarts it with
/// backoff; unacked deliveries go back to the queue meanwhile.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsumerActor;

/// What a consumer is started with; cloned on every restart.
#[derive(Debug, Clone)]
pub struct ConsumerParams {
    pub settings: BrokerSettings,
    pub kind: String,
    /// The priority band whose queue a job consumer reads; a dead-letter consumer's is
    /// [`PriorityBand::Normal`] (a kind has one dead-letter queue).
    pub band: PriorityBand,
    pub role: ConsumerRole,
    /// The connection this node's consumers share.
    pub connection: SharedConnection,
    pub health: BrokerHealth,
    /// Marked busy while a message is handled (not while draining), so the supervisor can
    /// kill and restart a consumer wedged on one.
    pub liveness: Liveness,
}

/// What a consumer does with its deliveries.
#[derive(Debug, Clone)]
pub enum ConsumerRole {
    /// Runs the jobs of `<ns>.<kind>`.
    Jobs(Arc<DeliveryContext>),
    /// Stores the messages of `<ns>.dlq.<kind>` as dead letters.
    DeadLetters(Arc<DeadLetterSink>),
}

/// Prefix of a job consumer's link name (`consumer:<kind>`).
pub(crate) const JOBS_LINK: &str = "consumer";
/// Prefix of a dead-letter consumer's link name (`dlq-consumer:<kind>`).
pub(crate) const DEAD_LETTERS_LINK: &str = "dlq-consumer";

/// Returns the link name of a consumer of `kind`'s queue in `band` whose role has the link
/// prefix `prefix` (`consumer:audit.run`, `consumer:audit.run.high`).
pub(crate) fn link_name(prefix: &str, kind: &str, band: PriorityBand) -> String {
    format!("{prefix}:{kind}{}", band.suffix())
}

impl ConsumerRole {
    fn link_prefix(&self) -> &'static str {
        match self {
            ConsumerRole::Jobs(_) => JOBS_LINK,
            ConsumerRole::DeadLetters(_) => DEAD_LETTERS_LINK,
        }
    }
}

#[derive(Debug)]
pub struct ConsumerState {
    params: ConsumerParams,
    link: Option<ConsumeLink>,
    /// Set by [`ConsumerMsg::Drain`]: the end of the delivery stream is expected.
    draining: bool,
}

#[derive(Debug)]
struct ConsumeLink {
    connection: Arc<Connection>,
    channel: Channel,
    consumer_tag: String,
    /// Reads the delivery stream; aborted when the link is dropped (a killed consumer's state
    /// is dropped without `post_stop`), which drops the stream's channel with it, so its
    /// deliveries go back to the queue and no reader outlives its consumer.
    stream_task: AbortOnDropHandle<()>,
    /// The tasks processing deliveries; closed by a drain, which waits for them.
    in_flight: TaskTracker,
    /// Set before the consumer is cancelled for a drain, so the stream's end is not a fault.
    cancelling: Arc<AtomicBool>,
}

#[derive(Debug)]
pub enum ConsumerMsg {
    /// Connects, declares the kind's topology and starts consuming.
    Connect,
    /// Checks that the connection is still up; fails the actor when it is not.
    CheckLink,
    /// The delivery stream ended: the channel or connection closed.
    StreamEnded(String),
    /// Stops taking deliveries (basic.cancel) and waits up to the timeout for those in flight
    /// to finish and be acked; replies with how many did not. Sent at shutdown.
    Drain(Duration, RpcReplyPort<usize>),
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(bulwark_actors::Fault),
}

impl DescribeMessage for ConsumerMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            ConsumerMsg::Connect => {
                HandledMessage::new("ConsumerMsg::Connect", "connect and consume")
            }
            ConsumerMsg::CheckLink => {
                HandledMessage::new("ConsumerMsg::CheckLink", "check the connection")
            }
            ConsumerMsg::StreamEnded(reason) => HandledMessage::new(
                "ConsumerMsg::StreamEnded",
                format!("delivery stream ended: {reason}"),
            ),
            ConsumerMsg::Drain(timeout, _) => HandledMessage::new(
                "ConsumerMsg::Drain",
                format!("drain within {} ms", timeout.as_millis()),
            ),
            #[cfg(feature = "chaos")]
            ConsumerMsg::Chaos(fault) => fault.describe(),
        }
    }
}

/// How often a consumer checks its connection, besides noticing its stream end.
const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

impl ConsumerParams {
    /// Returns the name of this consumer's link in the broker health report.
    pub fn link_name(&self) -> String {
        link_name(self.role.link_prefix(), &self.kind, self.band)
    }

    fn queue(&self) -> String {
        let topology = &self.settings.topology;
        match self.role {
            ConsumerRole::Jobs(_) => topology.job_queue_in(&self.kind, self.band),
            ConsumerRole::DeadLetters(_) => topology.dead_letter_queue(&self.kind),
        }
    }
}

impl Actor for ConsumerActor {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: ConsumerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Connecting happens in `handle`, so a broker that is down fails this actor (restarted
        // with backoff) instead of failing the whole tree's start.
        params.health.set(&params.link_name(), false);
        myself.send_message(ConsumerMsg::Connect)?;
        Ok(ConsumerState {
            params,
            link: None,
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = state.params.liveness.clone();
        let _busy = (!matches!(message, ConsumerMsg::Drain(..)))
            .then(|| liveness.busy_with(message.describe()));
        match message {
            ConsumerMsg::Connect if state.draining => Ok(()),
            ConsumerMsg::Connect => {
                let link = start_consuming(&myself, &state.params).await?;
                state.link = Some(link);
                state.params.health.set(&state.params.link_name(), true);
                myself.send_interval(LINK_CHECK_INTERVAL, || ConsumerMsg::CheckLink);
                Ok(())
            }
            ConsumerMsg::CheckLink | ConsumerMsg::StreamEnded(_) if state.draining => Ok(()),
            ConsumerMsg::CheckLink => match &state.link {
                Some(link) if !link.connection.status().connected() => {
                    state.params.health.set(&state.params.link_name(), false);
                    Err(format!("broker connection of consumer {} lost", state.params.kind).into())
                }
                _ => Ok(()),
            },
            ConsumerMsg::StreamEnded(reason) => {
                state.params.health.set(&state.params.link_name(), false);
                Err(format!(
                    "delivery stream of consumer {} ended: {reason}",
                    state.params.kind
                )
                .into())
            }
            ConsumerMsg::Drain(timeout, reply) => {
                state.draining = true;
                let unfinished = match &state.link {
                    Some(link) => drain_link(link, timeout).await,
                    None => 0,
                };
                info!(kind = state.params.kind, unfinished, "consumer drained");
                let _ = reply.send(unfinished);
                Ok(())
            }
            #[cfg(feature = "chaos")]
            ConsumerMsg::Chaos(fault) => fault.commit("consumer").await,
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.params.health.set(&state.params.link_name(), false);
        if let Some(link) = state.link.take() {
            link.stream_task.abort();
            // Closing the channel returns its unacked deliveries to the queue at once; the
            // connection stays for the other consumers (it closes with the last one).
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.channel.close(200, "consumer stopping".into()),
            )
            .await;
        }
        Ok(())
    }
}

async fn start_consuming(
    myself: &ActorRef<ConsumerMsg>,
    params: &ConsumerParams,
) -> Result<ConsumeLink, ActorProcessingErr> {
    let settings = &params.settings;
    let connection = params.connection.get(settings).await?;
    let channel = connection.create_channel().await?;
    settings
        .topology
        .declare(&channel, &[params.kind.as_str()])
        .await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let queue = params.queue();
    let consumer_tag = format!("{}/{queue}", settings.connection_name);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue, prefetch = settings.prefetch, "consumer started");
    let role = params.role.clone();
    let kind = params.kind.clone();
    let actor = myself.clone();
    let in_flight = TaskTracker::new();
    let tracker = in_flight.clone();
    let cancelling = Arc::new(AtomicBool::new(false));
    let cancel_expected = cancelling.clone();
    let stream_task = AbortOnDropHandle::new(tokio::spawn(async move {
        let reason = loop {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    let kind = kind.clone();
                    match &role {
                        ConsumerRole::Jobs(context) => {
                            tracker.spawn(process_delivery(context.clone(), kind, delivery));
                        }
                        ConsumerRole::DeadLetters(sink) => {
                            let sink = sink.clone();
                            tracker.spawn(async move {
                                store_delivery(&sink, kind, delivery).await;
                            });
                        }
                    }
                }
                Some(Err(error)) => break error.to_string(),
                None => break "consumer cancelled".to_owned(),
            }
        };
        if cancel_expected.load(Ordering::SeqCst) {
            info!(%reason, kind, "delivery stream ended for a drain");
        } else {
            warn!(%reason, kind, "delivery stream ended");
        }
        let _ = actor.send_message(ConsumerMsg::StreamEnded(reason));
    }));
    Ok(ConsumeLink {
        connection,
        channel,
        consumer_tag,
        stream_task,
        in_flight,
        cancelling,
    })
}

/// Cancels the consumer (the broker stops sending; the channel stays open so deliveries in
/// flight can still be acked) and waits for those in flight; returns how many did not finish.
async fn drain_link(link: &ConsumeLink, timeout: Duration) -> usize {
    link.cancelling.store(true, Ordering::SeqCst);
    let cancelled = link
        .channel
        .basic_cancel(
            link.consumer_tag.as_str().into(),
            BasicCancelOptions::default(),
        )
        .await;
    if let Err(error) = cancelled {
        warn!(%error, "failed to cancel the consumer; deliveries in flight return to the queue");
    }
    // Closed, the tracker's wait ends once the tasks in flight are done; a delivery the stream
    // still hands over before its end is tracked all the same.
    link.in_flight.close();
    let _ = tokio::time::timeout(timeout, link.in_flight.wait()).await;
    link.in_flight.len()
}

/// Drains the consumers registered under `names` at once (see [`ConsumerMsg::Drain`]); returns
/// how many deliveries did not finish within `timeout`. Consumers not running are skipped.
pub async fn drain_consumers(names: &[String], timeout: Duration) -> usize {
    let drains = names.iter().filter_map(|name| {
        let consumer: ActorRef<ConsumerMsg> = registry::where_is(name.clone())?.into();
        Some(async move {
            // A little longer than the drain, so the reply comes back.
            let call_timeout = timeout + Duration::from_secs(2);
            match consumer
                .call(
                    |reply| ConsumerMsg::Drain(timeout, reply),
                    Some(call_timeout),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(unfinished)) => unfinished,
                _ => 0,
            }
        })
    });
    futures::future::join_all(drains).await.into_iter().sum()
}
