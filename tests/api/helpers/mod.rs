//! Test plumbing, by what it stands up:
//! - `db`: a fresh database per test and backend ([`TestDb`], `on_every_backend!`);
//! - `app`: the app in this process ([`TestApp`]) or its worker on a test clock ([`World`]);
//! - `process`: `allot` child processes ([`ServeProcess`], [`ctl`]);
//! - `smtp`: the SMTP server process ([`SmtpServer`]);
//! - `hold`: a batch held up in the database, a row made to fail (group commit);
//! - `outside`: what fault tests break: a small disk, a private PostgreSQL;
//! - `shop`: orders streamed and retried like WordPress, and the checks after a fault;
//! - `requests`: HTTP calls, a starting gate for races, the coupon invariant.

mod app;
mod db;
mod hold;
mod outside;
mod process;
mod requests;
mod shop;
mod smtp;

use std::time::Duration;

pub use app::*;
pub use db::*;
pub use hold::*;
pub use outside::*;
pub use process::*;
pub use requests::*;
pub use shop::*;
pub use smtp::*;

/// An address the tests know to be valid.
pub fn email(address: &str) -> allot::text::EmailAddress {
    allot::text::EmailAddress::parse(address).expect("a valid test address")
}

/// Waits for a condition on the outside world (files, rows), up to 30 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn read_eml_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}
