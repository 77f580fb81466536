//! allot: a flash-sale fulfilment backend.
//!
//! Layout, by what each part does for a user:
//! - [`coupons`]: the flash-sale coupon API (create, claim, show) and its SQL per backend.
//! - [`keys`]: the key bank: license keys per SKU, imported, vended FIFO exactly once.
//! - [`intake`]: order webhooks from shops; so far, payload normalisation.
//! - [`jobs`]: the outbox: durable jobs, workers, retries, dead letters, alerts.
//! - [`mail`]: email over file, SMTP, Postmark or SendGrid, with templates.
//! - [`ops`]: health, readiness and Prometheus metrics endpoints.
//!
//! Plumbing kept thin: [`config`] (settings), [`db`] (pools and migrations),
//! [`http`] (server, errors, JSON extraction), [`telemetry`] (logs), [`cli`].

pub mod cli;
pub mod config;
pub mod coupons;
pub mod db;
pub mod http;
pub mod intake;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod ops;
pub mod orders;
pub mod scheduler;
pub mod telemetry;

pub use http::Application;
