//! Bulwark's measurement tools, run as `bulwark-bench <target>`: throughput and latency
//! benchmarks of a node's paths, and the sentiment engines' evaluation on labeled data. They
//! boot nodes through the `bulwark` library; none of them is a test. See docs/benchmarks.md.
//!
//! # Layout
//! - `cli`: the command line of `bulwark-bench`.
//! - `measure`: the one percentile helper, and CPU seconds of this process and of the database
//!   and broker servers (procfs).
//! - `queue`: `queue`, local-queue drain rate; `enqueue`, jobs stored one at a time vs in batches.
//! - `amqp`: `amqp`, broker ceiling vs end-to-end jobs over RabbitMQ.
//! - `auth`: `auth`, what a key check and its rate limits cost a request.
//! - `providers`: `providers`, the latency the provider path adds over a direct call.
//! - `scheduling`: `scheduler` and `dlq`, slot lag and dead-letter requeue rate.
//! - `restart`: `restart`, the time a supervisor takes to restart a crashed child.
//! - `eval`: `eval`, accuracy and throughput of a sentiment engine.

pub mod amqp;
pub mod auth;
pub mod cli;
pub mod eval;
pub mod measure;
pub mod providers;
pub mod queue;
pub mod restart;
pub mod scheduling;
