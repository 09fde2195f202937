//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the migration files
//! at compile time, and on stable Rust the macro cannot tell cargo it read them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
