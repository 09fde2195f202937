pub mod audits;
pub mod health;
pub mod jobs;
pub mod sentiment;
pub mod incidents;
pub mod ops;
pub mod schedules;
pub mod dead_letters;
