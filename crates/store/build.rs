//! `sqlx::migrate!` embeds the migration files, and the `query!` macros read the offline
//! query data in `.sqlx/`, at compile time; rebuild when either changes, or when the
//! variables that switch the macros between a live database and that data do.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
    println!("cargo:rerun-if-changed=../../migrations/postgres");
    println!("cargo:rerun-if-changed=.sqlx");
    println!("cargo:rerun-if-env-changed=DATABASE_URL");
    println!("cargo:rerun-if-env-changed=SQLX_OFFLINE");
    println!("cargo:rerun-if-env-changed=SQLX_OFFLINE_DIR");
}
