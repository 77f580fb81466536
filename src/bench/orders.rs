//! `allot bench orders`: new orders for one SKU through the generic
//! webhook, each a key vended and an email queued (or a wait for stock).
//! Verified afterwards: every acknowledged order is fulfilled or waiting,
//! every fulfilled order holds its own key and email job, and no key went
//! to two orders.

use indicatif::ProgressBar;
use serde_json::json;

use super::{Checks, Options, Target, Verdict, load};
use crate::{
    db::Db,
    keys, on_db,
    orders::{OrderState, Status},
};

/// Keys imported per second of the run, more than any backend sells;
/// orders beyond them would wait for stock, which the verification accepts.
const KEYS_PER_SECOND: f64 = 20_000.0;

pub(super) async fn run(
    target: &Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<(load::Tally, Verdict)> {
    let orders = Orders::prepare(target, options).await?;
    let tally = orders.drive(target, options, progress).await?;
    let checks = orders.verify(target, &tally).await?;
    Ok((tally, checks))
}

/// New orders for a new SKU, its keys imported first.
pub(super) struct Orders {
    run: String,
    sku: keys::Sku,
}

impl Orders {
    pub(super) async fn prepare(target: &Target, options: &Options) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !target.webhook_token.is_empty(),
            "the orders scenario against --url needs ALLOT_WEBHOOK_TOKEN, the server's webhook token"
        );
        let run = super::run_id();
        let sku = keys::Sku::parse(&format!("bench-{run}"))?;
        let keys = (options.duration.as_secs_f64() * KEYS_PER_SECOND).clamp(1_000.0, 2_000_000.0);
        import_keys(&target.db, &sku, &run, keys as usize).await?;
        Ok(Self { run, sku })
    }

    pub(super) async fn drive(
        &self,
        target: &Target,
        options: &Options,
        progress: &ProgressBar,
    ) -> anyhow::Result<load::Tally> {
        let url = format!(
            "{}/v1/webhooks/generic?token={}&sku={}",
            target.base,
            target.webhook_token,
            self.sku.as_str()
        );
        let prefix = format!("B{}-", self.run);
        load::drive(
            options.connections,
            options.duration,
            progress,
            move |connection, sequence, client| {
                let body = json!({
                    "order_id": format!("{prefix}{connection}-{sequence}"),
                    "email": format!("buyer{connection}x{sequence}@bench.invalid"),
                });
                let url = url.clone();
                async move {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 200 => {
                            let answer: serde_json::Value = r.json().await.unwrap_or_default();
                            match answer["status"].as_str() {
                                Some(s)
                                    if s == Status::Fulfilled.as_str()
                                        || s == Status::AwaitingStock.as_str() =>
                                {
                                    Ok(())
                                }
                                other => Err(format!("200 {}", other.unwrap_or("?"))),
                            }
                        }
                        other => Err(load::error_kind(other).await),
                    }
                }
            },
        )
        .await
    }

    pub(super) async fn verify(
        &self,
        target: &Target,
        tally: &load::Tally,
    ) -> anyhow::Result<Verdict> {
        verify(&target.db, &self.sku, &format!("B{}-%", self.run), tally).await
    }
}

async fn import_keys(db: &Db, sku: &keys::Sku, run: &str, n: usize) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let lines: Vec<String> = (0..n).map(|i| format!("BENCH-{run}-{i:08}")).collect();
    std::fs::write(file.path(), lines.join("\n"))?;
    keys::import::import_file(db, file.path(), sku, &ProgressBar::hidden()).await?;
    Ok(())
}

/// (state, orders, with a key, distinct keys, with an email job)
type StateRow = (String, i64, i64, i64, i64);

async fn verify(
    db: &Db,
    sku: &keys::Sku,
    orders_like: &str,
    tally: &load::Tally,
) -> anyhow::Result<Verdict> {
    let rows: Vec<StateRow> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select state, count(*), count(license_key_id),
                    count(distinct license_key_id), count(email_job_id)
               from orders where source = 'generic' and order_id like ?
              group by state"))
        .bind(orders_like)
        .fetch_all(pool)
        .await
    })?;
    let assigned = keys::stock(db)
        .await?
        .into_iter()
        .find(|s| s.product_sku == sku.as_str())
        .map_or(0, |s| s.assigned);
    let count = |state: &str| rows.iter().find(|r| r.0 == state).cloned();
    let (fulfilled_state, waiting_state) = (
        OrderState::Fulfilled.as_str(),
        OrderState::AwaitingStock.as_str(),
    );
    let fulfilled = count(fulfilled_state).unwrap_or_else(|| (fulfilled_state.into(), 0, 0, 0, 0));
    let waiting = count(waiting_state).map_or(0, |r| r.1);
    let others: i64 = rows
        .iter()
        .filter(|r| r.0 != fulfilled_state && r.0 != waiting_state)
        .map(|r| r.1)
        .sum();
    let unanswered = tally.unanswered();
    let placed = (fulfilled.1 + waiting) as u64;
    let mut checks = Checks::default();
    checks.check(
        (tally.ok()..=tally.ok() + unanswered).contains(&placed) && others == 0,
        format!(
            "{} acknowledged orders: {} fulfilled, {waiting} waiting for stock, {others} otherwise",
            tally.ok(),
            fulfilled.1
        ),
    );
    checks.check(
        fulfilled.1 == fulfilled.2 && fulfilled.2 == fulfilled.3 && fulfilled.1 == fulfilled.4,
        format!(
            "{} fulfilled orders hold {} keys ({} distinct) and {} email jobs",
            fulfilled.1, fulfilled.2, fulfilled.3, fulfilled.4
        ),
    );
    checks.check(
        assigned == fulfilled.1,
        format!("{assigned} keys of the SKU assigned, one per fulfilled order"),
    );
    Ok(checks.verdict())
}
