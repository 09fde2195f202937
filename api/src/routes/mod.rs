pub mod health;
pub mod jobs;
pub mod sentiment;
