pub mod audits;
pub mod dead_letters;
pub mod health;
pub mod incidents;
pub mod jobs;
pub mod ops;
mod paging;
pub mod schedules;
pub mod sentiment;
