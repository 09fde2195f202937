//! The delivery path's database statements, group-committed: deliveries in flight at the same
//! time share one create-or-find and one completion statement (see
//! [`bulwark_store::GroupCommit`]). Under load this turns the round trips of a job (the
//! statement that creates its row or returns the one that exists, and a completion) into as
//! many per batch; a lone delivery still pays only its own. The lookup is shared the same way,
//! for the rare message whose key another node stored while the create-or-find ran.

use bulwark_store::{
    BatchWrite, ClaimedInsert, CompleteJobs, DeliveredKey, DeliveredRow, GroupCommit,
    GroupCommitParams, Job, JobCompletion, LeaseRef, NewJob, Store, StoreError,
};
use serde_json::Value;

/// The most deliveries one statement carries (deliveries in flight are bounded by the prefetch
/// anyway), and two statements of each kind in flight: a delivery arriving while one runs is
/// written at once rather than after it.
const GROUP_COMMIT: GroupCommitParams = GroupCommitParams {
    max_batch: 128,
    num_writers: 2,
};

/// The group commits of a node's deliveries; cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryWrites {
    find: GroupCommit<FindDelivered>,
    create: GroupCommit<CreateDelivered>,
    complete: GroupCommit<CompleteJobs>,
}

impl DeliveryWrites {
    /// Starts the writer tasks on the current runtime; they end when the last clone is dropped.
    pub fn spawn(store: &Store) -> Self {
        DeliveryWrites {
            find: GroupCommit::spawn(FindDelivered(store.clone()), GROUP_COMMIT),
            create: GroupCommit::spawn(CreateDelivered(store.clone()), GROUP_COMMIT),
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

    /// Creates the row of a delivered message already claimed, or returns the row that exists
    /// (see [`Store::create_delivered_jobs`]); `None` when another node stored its key while
    /// the statement ran.
    pub async fn create_or_find(
        &self,
        message_id: &str,
        new_job: NewJob,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<Option<DeliveredRow>, StoreError> {
        let insert = ClaimedInsert {
            message_id: message_id.to_owned(),
            new_job,
            owner: owner.to_owned(),
            lease_until_ms,
        };
        self.create.submit(insert).await
    }

    /// Records a success (see [`Store::complete_job`]); `None` when the lease was lost.
    pub async fn complete(
        &self,
        lease: LeaseRef<'_>,
        result: Value,
    ) -> Result<Option<Job>, StoreError> {
        let completion = JobCompletion {
            id: lease.job_id.to_owned(),
            owner: lease.owner.to_owned(),
            attempt: lease.attempt,
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
struct CreateDelivered(Store);

impl BatchWrite for CreateDelivered {
    type Request = ClaimedInsert;
    type Response = Option<DeliveredRow>;
    const NAME: &'static str = "create_delivered_jobs";

    async fn write(
        &self,
        inserts: &[ClaimedInsert],
    ) -> Result<Vec<Option<DeliveredRow>>, StoreError> {
        self.0.create_delivered_jobs(inserts).await
    }
}
