//! Order intake throughput: webhooks per second through the real HTTP
//! server (token check → normalise → order row + vend + email job in one
//! transaction → 200), with the server's own workers sending the key emails
//! to files meanwhile, as in production.
//!
//! Usage: bench_webhooks DATABASE_URL [ORDERS] [CONCURRENCY]
//! Keys for every order are imported first; the database should be fresh
//! (scripts/bench-webhooks.sh makes one per backend).

use std::time::{Duration, Instant};

use allot::{Application, config::Settings, db::Db, keys};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "sqlite:///tmp/allot-bench.db".into());
    let orders: usize = args.get(2).map_or(Ok(5_000), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(32), |a| a.parse())?;

    let mail_dir = tempfile::tempdir()?;
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        ..Settings::for_database(url.clone())
    };
    settings.database.max_connections = 20;
    settings.intake.webhook_token = Some("bench-token".to_string().into());
    settings.mail.transport = allot::config::MailTransport::File {
        dir: mail_dir.path().to_path_buf(),
    };

    let db = Db::open(&settings.database).await?;
    let file = tempfile::NamedTempFile::new()?;
    let lines: Vec<String> = (0..orders).map(|i| format!("BENCH-{i:08}")).collect();
    std::fs::write(file.path(), lines.join("\n"))?;
    let sku = keys::Sku::parse("bench-course")?;
    keys::import::import_file(&db, file.path(), &sku, &indicatif::ProgressBar::hidden()).await?;

    let app = Application::build(settings).await?;
    let base = format!(
        "http://{}/v1/webhooks/generic?token=bench-token&sku=bench-course",
        app.local_addr()
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= orders {
                    return anyhow::Ok(latencies);
                }
                let body = format!(r#"{{"order_id": "O-{i}", "email": "buyer{i}@example.com"}}"#);
                let sent = Instant::now();
                let response = client.post(&base).body(body).send().await?;
                anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
                let answer: serde_json::Value = response.json().await?;
                anyhow::ensure!(answer["status"] == "fulfilled", "{answer}");
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let stock = keys::stock(&db).await?;
    anyhow::ensure!(stock[0].assigned == orders as i64, "assigned {stock:?}");
    println!(
        "{}: {orders} orders, {concurrency} concurrent: {:.0} orders/s, p50 {:.1} ms, p99 {:.1} ms",
        db.backend().name(),
        orders as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
