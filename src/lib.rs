//! allot: a flash-sale fulfilment backend.
//!
//! Layout, by what each part does for a user:
//! - [`coupons`]: the flash-sale coupon API (create, claim, show) and its SQL per backend.
//! - [`ops`]: health, readiness and Prometheus metrics endpoints.
//!
//! Plumbing kept thin: [`config`] (settings), [`db`] (pools and migrations),
//! [`http`] (server, errors, JSON extraction), [`telemetry`] (logs), [`cli`].

pub mod cli;
pub mod config;
pub mod coupons;
pub mod db;
pub mod http;
pub mod ops;
pub mod telemetry;

pub use http::Application;
