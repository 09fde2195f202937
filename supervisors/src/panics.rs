//! A process-wide panic hook that remembers recent panics with their backtraces, so a
//! supervisor can tell a child that panicked from one that returned an error (ractor reports
//! both as `ActorFailed`) and crash reports can include where it happened.

use std::backtrace::Backtrace;
use std::collections::VecDeque;
use std::sync::{Mutex, Once, PoisonError};
use std::time::SystemTime;

const MAX_RECORDS: usize = 64;

static RECENT_PANICS: Mutex<VecDeque<PanicRecord>> = Mutex::new(VecDeque::new());
static INSTALL: Once = Once::new();

/// One panic seen by the hook.
#[derive(Debug, Clone)]
pub struct PanicRecord {
    pub message: String,
    pub thread_name: Option<String>,
    pub location: Option<String>,
    pub backtrace: String,
    pub at: SystemTime,
}

/// Installs the hook once per process; the previous hook still runs after it.
pub fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            let record = PanicRecord {
                message,
                thread_name: std::thread::current().name().map(str::to_owned),
                location: info.location().map(ToString::to_string),
                backtrace: Backtrace::force_capture().to_string(),
                at: SystemTime::now(),
            };
            let mut recent = RECENT_PANICS.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == MAX_RECORDS {
                recent.pop_front();
            }
            recent.push_back(record);
            drop(recent);
            previous(info);
        }));
    });
}

/// Removes and returns the most recent panic with this message, if the hook saw one.
pub fn take_panic(message: &str) -> Option<PanicRecord> {
    let mut recent = RECENT_PANICS.lock().unwrap_or_else(PoisonError::into_inner);
    let position = recent
        .iter()
        .rposition(|record| record.message == message)?;
    recent.remove(position)
}

/// Removes and returns the panic a failure message reports: the one with exactly this message,
/// or else the most recent whose message the failure quotes (an actor failing because a
/// thread it owns panicked, e.g. `inference thread ended: Panicked("…")`).
pub fn take_panic_within(failure: &str) -> Option<PanicRecord> {
    if let Some(record) = take_panic(failure) {
        return Some(record);
    }
    let mut recent = RECENT_PANICS.lock().unwrap_or_else(PoisonError::into_inner);
    let position = recent
        .iter()
        .rposition(|record| record.message.len() >= 8 && failure.contains(&record.message))?;
    recent.remove(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a caught panic is recorded with its message and location, and taken only once.
    #[test]
    fn records_panics_once() {
        install_panic_hook();
        let message = "records_panics_once unique message";
        let caught = std::panic::catch_unwind(|| panic!("{message}"));
        assert!(caught.is_err());
        let record = take_panic(message).expect("panic recorded");
        assert!(record.location.unwrap().contains("panics.rs"));
        assert!(take_panic(message).is_none());
    }
}
