use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shows whether an actor is busy on a message, since when, and which message it handles (or
/// handled last). Supervisors read it on their heartbeat and kill a child that has been busy
/// past its hang deadline; crash reports name the message. It is created with the child's
/// spec, so it stays the same across restarts.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

#[derive(Debug)]
struct LivenessInner {
    origin: Instant,
    /// Microseconds since `origin` when the current message started, plus one; 0 when idle.
    busy_since_micros: AtomicU64,
    /// The message being handled, or the last one handled: kept after the guard drops, so a
    /// report written after an error return or a panic still names it.
    last_message: Mutex<Option<HandledMessage>>,
}

/// What an actor is handling, as crash and hang reports show it. The payload is the raw
/// input; reports redact or truncate it per configuration before it is written anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandledMessage {
    /// The message's type, e.g. `sentiment.batch` or `JobRunnerMsg::Poll`.
    pub message_type: String,
    /// A short description without user data, e.g. `3 texts`.
    pub summary: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// The input (JSON text), when replaying it could reproduce a failure.
    pub payload: Option<String>,
}

impl HandledMessage {
    /// Returns a message description with type and summary only.
    pub fn new(message_type: impl Into<String>, summary: impl Into<String>) -> Self {
        HandledMessage {
            message_type: message_type.into(),
            summary: summary.into(),
            ..HandledMessage::default()
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                busy_since_micros: AtomicU64::new(0),
                last_message: Mutex::new(None),
            }),
        }
    }
}

impl Liveness {
    /// Marks the actor busy until the guard is dropped, on a message it does not describe.
    pub fn busy(&self) -> BusyGuard<'_> {
        let micros = self.inner.origin.elapsed().as_micros() as u64 + 1;
        self.inner
            .busy_since_micros
            .store(micros, Ordering::Release);
        BusyGuard { liveness: self }
    }

    /// Marks the actor busy on `message` until the guard is dropped; the message stays
    /// readable through [`Liveness::last_message`] afterwards.
    pub fn busy_with(&self, message: HandledMessage) -> BusyGuard<'_> {
        *self
            .inner
            .last_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.busy()
    }

    /// Returns how long the actor has been busy on its current message, or `None` when idle.
    pub fn busy_for(&self) -> Option<Duration> {
        let since = self.inner.busy_since_micros.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let now = self.inner.origin.elapsed().as_micros() as u64 + 1;
        Some(Duration::from_micros(now.saturating_sub(since)))
    }

    /// Returns the message being handled, or the last one handled through
    /// [`Liveness::busy_with`].
    pub fn last_message(&self) -> Option<HandledMessage> {
        self.inner
            .last_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the actor idle; called when a hung actor has been killed. The last message stays.
    pub fn reset(&self) {
        self.inner.busy_since_micros.store(0, Ordering::Release);
    }
}

/// Keeps a [`Liveness`] busy while alive.
#[derive(Debug)]
pub struct BusyGuard<'a> {
    liveness: &'a Liveness,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.liveness.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the busy span starts with the guard and ends when it drops.
    #[test]
    fn busy_guard_marks_and_clears() {
        let liveness = Liveness::default();
        assert!(liveness.busy_for().is_none());
        {
            let _guard = liveness.busy();
            std::thread::sleep(Duration::from_millis(2));
            assert!(liveness.busy_for().unwrap() >= Duration::from_millis(2));
        }
        assert!(liveness.busy_for().is_none());
    }

    /// Proves the described message is readable while busy and after the guard drops, so a
    /// report written after the failure still names it, and that the next message replaces it.
    #[test]
    fn last_message_outlives_the_guard() {
        let liveness = Liveness::default();
        assert!(liveness.last_message().is_none());
        {
            let _guard = liveness.busy_with(HandledMessage {
                request_id: Some("req-1".to_owned()),
                ..HandledMessage::new("sentiment.batch", "2 texts")
            });
            assert_eq!(liveness.last_message().unwrap().summary, "2 texts");
        }
        assert!(liveness.busy_for().is_none());
        let last = liveness.last_message().unwrap();
        assert_eq!(last.message_type, "sentiment.batch");
        assert_eq!(last.request_id.as_deref(), Some("req-1"));
        drop(liveness.busy_with(HandledMessage::new("next", "1 text")));
        assert_eq!(liveness.last_message().unwrap().message_type, "next");
    }
}
