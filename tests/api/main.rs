//! Integration tests. Every scenario runs against SQLite, PostgreSQL and
//! MariaDB/MySQL, each test on a fresh database and an app on a random port.
//!
//! PostgreSQL and MySQL URLs come from `ALLOT_TEST_POSTGRES_URL` and
//! `ALLOT_TEST_MYSQL_URL` (a user allowed to create databases). Without them
//! those backends are skipped with a notice, except under `CI=true`, where a
//! missing backend fails the run.

mod helpers;

mod abuse;
mod architecture;
mod background;
mod claim_batches;
mod cli;
mod control;
mod coupon_contract;
mod coupon_races;
mod crash_safety;
mod dashboard;
mod delivery;
mod delivery_providers;
mod delivery_smtp;
mod deployment;
mod faults;
mod key_bank;
mod key_reads;
mod merchant_webhooks;
mod openapi;
mod operations;
mod order_batches;
mod payments;
mod processes;
mod properties;
mod request_ids;
mod slow_clients;
mod stats;
mod stock_and_alerts;
mod webhooks;
