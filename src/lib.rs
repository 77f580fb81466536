//! allot: a flash-sale fulfilment backend.
//!
//! Layout, by what each part does for a user (see `docs/architecture.md`):
//! - [`coupons`]: the flash-sale coupon API (create, claim, show) and its SQL.
//! - [`keys`]: the key bank: license keys per SKU, imported, vended FIFO exactly once.
//! - [`intake`]: who may deliver orders, and each shop's payload made into orders.
//! - [`orders`]: orders fulfilled from the key bank, waiting for stock, set aside;
//!   the webhook and order routes; what buyers and admins are told about them.
//! - [`payments`]: Stripe and signed payment events made into orders and refunds.
//! - [`merchant`]: merchant webhooks out: endpoints, signed events, delivery attempts.
//! - [`notices`]: emails about no order: the dead-letter digest, low stock, tests.
//! - [`jobs`]: the outbox: durable jobs, workers, retries, dead letters.
//! - [`mail`]: email over file, SMTP, Postmark or SendGrid, with templates.
//! - [`scheduler`]: timed work inside `allot serve` (low-stock check, restock sweep).
//! - [`stats`]: `GET /v1/stats`, computed from the database, never NaN.
//! - [`dashboard`]: `/admin`, the operator's pages: stock, orders, the queue, fixes in one click.
//! - [`ops`]: health, readiness and Prometheus metrics endpoints.
//! - [`outage`]: the admin mailed when the database refuses requests (not via the outbox).
//!
//! - [`background`]: every background loop supervised: restarted, reported, never silent.
//!
//! On top, [`app`] wires them into a process and [`cli`] is the command line.
//! Plumbing kept thin, importing no capability: [`batch`] (group commit),
//! [`config`] (settings), [`db`]
//! (pools, transactions, the SQL idiom), [`http`] (errors, JSON, layers),
//! [`clock`] (time), [`text`] (bounded text, email addresses), [`telemetry`] (logs, and the request a task serves).

#![forbid(unsafe_code)]

pub mod app;
pub mod background;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod coupons;
pub mod dashboard;
pub mod db;
pub mod http;
pub mod intake;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod merchant;
pub mod notices;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod outage;
pub mod payments;
pub mod scheduler;
pub mod stats;
pub mod telemetry;
pub mod text;

pub use app::Application;
