use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Records what a fake standing in for a collaborator (a publisher, a child actor, a sink)
/// receives, in order. Clones share one record, so the fake and the test each hold one.
#[derive(Debug)]
pub struct Probe<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Probe<T> {
    fn clone(&self) -> Self {
        Probe {
            records: self.records.clone(),
        }
    }
}

impl<T> Default for Probe<T> {
    fn default() -> Self {
        Probe {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> Probe<T> {
    /// Appends `record`.
    pub fn record(&self, record: T) {
        self.lock().push(record);
    }

    /// Returns every record so far, oldest first.
    pub fn records(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Returns the number of records so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves clones share one record, kept in order, including records made on another
    /// thread.
    #[test]
    fn clones_share_the_record_in_order() {
        let probe = Probe::default();
        let fake = probe.clone();
        assert!(probe.is_empty());
        std::thread::spawn(move || {
            fake.record("first");
            fake.record("second");
        })
        .join()
        .unwrap();
        assert_eq!(probe.records(), vec!["first", "second"]);
        assert_eq!(probe.len(), 2);
    }
}
