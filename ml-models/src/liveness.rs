use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shows whether an actor is busy on a message and since when. Supervisors read it on their
/// heartbeat and kill a child that has been busy past its hang deadline. It is created with the
/// child's spec, so it stays the same across restarts.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

#[derive(Debug)]
struct LivenessInner {
    origin: Instant,
    /// Microseconds since `origin` when the current message started, plus one; 0 when idle.
    busy_since_micros: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                busy_since_micros: AtomicU64::new(0),
            }),
        }
    }
}

impl Liveness {
    /// Marks the actor busy until the guard is dropped.
    pub fn busy(&self) -> BusyGuard<'_> {
        let micros = self.inner.origin.elapsed().as_micros() as u64 + 1;
        self.inner
            .busy_since_micros
            .store(micros, Ordering::Release);
        BusyGuard { liveness: self }
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

    /// Marks the actor idle; called when a hung actor has been killed.
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
}
