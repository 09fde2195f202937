//! The delivery path's database statements, group-committed: deliveries in flight at the same
//! time share one lookup, one insert and one completion statement (see
//! [`bulwark_store::GroupCommit`]). Under load this turns the round trips of a job (an insert,
//! or an insert and a lookup for a message whose row exists, and a completion) into as many
//! per batch; a lone delivery still pays only its own.

use bulwark_store::{
    BatchWrite, ClaimedInsert, CompleteJobs, DeliveredKey, GroupCommit, GroupCommitParams, Job,
    JobCompletion, NewJob, Store, StoreError,
};
use serde_json::Value;

/// The most deliveries one statement carries (deliveries in flight are bounded by the prefetch
/// anyway), and two statements of each kind in flight: a delivery arriving while one runs is
/// written at once rather than after it.
const GROUP_COMMIT: GroupCommitParams = GroupCommitParams {
    max_batch: 128,
    num_writers: 2,
};

/// The three group commits of a node's deliveries; cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryWrites {
    find: GroupCommit<FindDelivered>,
    insert: GroupCommit<InsertClaimed>,
    complete: GroupCommit<CompleteJobs>,
}

impl DeliveryWrites {
    /// Starts the writer tasks on the current runtime; they end when the last clone is dropped.
    pub fn spawn(store: &Store) -> Self {
        DeliveryWrites {
            find: GroupCommit::spawn(FindDelivered(store.clone()), GROUP_COMMIT),
            insert: GroupCommit::spawn(InsertClaimed(store.clone()), GROUP_COMMIT),
            complete: GroupCommit::spawn(CompleteJobs(store.clone()), GROUP_COMMIT),
        }
    }

    /// Returns the row of a delivered message (see [`Store::find_delivered_jobs`]).
    pub async fn find(&self, id: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let lookup = DeliveredKey {
            id: id.to_owned(),
            key: key.to_owned(),
        };
        self.find.submit(lookup).await
    }

    /// Creates the row of a delivered message already claimed (see
    /// [`Store::insert_claimed_jobs`]); `None` when its key is taken or a job has the
    /// message's id.
    pub async fn insert_claimed(
        &self,
        message_id: &str,
        new_job: NewJob,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<Option<Job>, StoreError> {
        let insert = ClaimedInsert {
            message_id: message_id.to_owned(),
            new_job,
            owner: owner.to_owned(),
            lease_until_ms,
        };
        self.insert.submit(insert).await
    }

    /// Records a success (see [`Store::complete_job`]); `None` when the lease was lost.
    pub async fn complete(
        &self,
        id: &str,
        owner: &str,
        result: Value,
    ) -> Result<Option<Job>, StoreError> {
        let completion = JobCompletion {
            id: id.to_owned(),
            owner: owner.to_owned(),
            result,
        };
        self.complete.submit(completion).await
    }
}

#[derive(Debug)]
struct FindDelivered(Store);

impl BatchWrite for FindDelivered {
    type Request = DeliveredKey;
    type Response = Option<Job>;
    const NAME: &'static str = "find_delivered_jobs";

    async fn write(&self, lookups: &[DeliveredKey]) -> Result<Vec<Option<Job>>, StoreError> {
        self.0.find_delivered_jobs(lookups).await
    }
}

#[derive(Debug)]
struct InsertClaimed(Store);

impl BatchWrite for InsertClaimed {
    type Request = ClaimedInsert;
    type Response = Option<Job>;
    const NAME: &'static str = "insert_claimed_jobs";

    async fn write(&self, inserts: &[ClaimedInsert]) -> Result<Vec<Option<Job>>, StoreError> {
        self.0.insert_claimed_jobs(inserts).await
    }
}
