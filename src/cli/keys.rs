//! `allot keys …`: import, stock, revoke.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::{
    clock::now_ms,
    config::Settings,
    db::Db,
    keys::{self, LicenseKey, Revoked, Sku},
    orders::{self, Fulfilment},
};

#[derive(Subcommand)]
pub(super) enum KeysCommand {
    /// Add keys to a SKU's pool from a CSV file (with a `license_key`
    /// column) or a file with one key per line.
    Import {
        file: PathBuf,
        #[arg(long)]
        sku: String,
    },
    /// Available, assigned and revoked keys per SKU.
    Stock {
        #[arg(long)]
        json: bool,
    },
    /// Take a key out of circulation.
    Revoke { key: String },
}

pub(super) async fn run(command: KeysCommand, db: &Db, settings: &Settings) -> anyhow::Result<()> {
    match command {
        KeysCommand::Import { file, sku } => {
            let sku = Sku::parse(&sku)?;
            let progress = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            let report = keys::import::import_file(db, &file, &sku, &progress).await?;
            progress.finish_and_clear();
            println!(
                "imported {} key(s) into SKU {}",
                report.imported,
                sku.as_str()
            );
            let lines = |lines: &[u64]| {
                let shown: Vec<String> = lines.iter().take(20).map(u64::to_string).collect();
                let more = if lines.len() > 20 {
                    format!(", … {} more", lines.len() - 20)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            };
            let reported: [(&[u64], &str); 4] = [
                (&report.blank, "skipped {} blank line(s)"),
                (
                    &report.trimmed,
                    "imported {} key(s) without the spaces around them",
                ),
                (
                    &report.duplicate_in_file,
                    "skipped {} duplicate(s) of earlier lines",
                ),
                (
                    &report.already_in_pool,
                    "skipped {} key(s) already in the pool",
                ),
            ];
            for (found, what) in reported {
                if !found.is_empty() {
                    let what = what.replace("{}", &found.len().to_string());
                    println!("{what}: line {}", lines(found));
                }
            }
            for (line, reason) in report.invalid.iter().take(20) {
                println!("skipped line {line}: {reason}");
            }
            if report.invalid.len() > 20 {
                println!("skipped {} more invalid line(s)", report.invalid.len() - 20);
            }
            // Orders that waited for this SKU get their keys now, oldest
            // first (a running `allot serve` would also find them shortly).
            let fulfilment = Fulfilment::new(db.clone(), settings);
            let served = fulfilment
                .fulfil_waiting(&sku, now_ms())
                .await
                .context("fulfilling orders that waited for stock")?;
            if served > 0 {
                println!("fulfilled {served} waiting order(s); their emails are queued");
            }
        }
        KeysCommand::Stock { json } => {
            let stock = keys::stock(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stock)?);
            } else if stock.is_empty() {
                println!("no keys; add some with `allot keys import FILE --sku SKU`");
            } else {
                let width = stock
                    .iter()
                    .map(|s| s.product_sku.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(11);
                println!(
                    "{:<width$}  {:>9}  {:>9}  {:>9}",
                    "product_sku", "available", "assigned", "revoked"
                );
                for row in stock {
                    println!(
                        "{:<width$}  {:>9}  {:>9}  {:>9}",
                        row.product_sku, row.available, row.assigned, row.revoked
                    );
                }
            }
        }
        KeysCommand::Revoke { key } => {
            let key = LicenseKey::parse(key.trim())?;
            let max_attempts = settings.jobs.max_attempts();
            match orders::revoke_key(db, &key, max_attempts, now_ms()).await? {
                Revoked::Yes { was, .. } => println!("revoked the key (it was {was})"),
                Revoked::Already => println!("the key was already revoked"),
                Revoked::NotFound => anyhow::bail!("no such key in any pool"),
            }
        }
    }
    Ok(())
}
