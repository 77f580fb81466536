//! `sqlx::migrate!` reads `migrations/` while the crate compiles. Cargo
//! does not know that, so a migration added to the tree was not built in
//! until some source file changed; this tells it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
