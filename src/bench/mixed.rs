//! `allot bench mixed`: half the connections claim a hot coupon while the
//! other half place webhook orders, on one server at once, so each path
//! is measured while the other competes for the same database. Each half
//! is verified as in its own scenario.

use indicatif::ProgressBar;

use super::{Options, Target, Verdict, claims, load, orders};

/// The two halves' figures side by side, then as one tally.
pub(super) struct Mixed {
    pub tally: load::Tally,
    pub verdict: Verdict,
    /// Requests per second of each half, by scenario.
    pub parts: Vec<(&'static str, f64)>,
}

pub(super) async fn run(
    target: &Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<Mixed> {
    anyhow::ensure!(
        options.connections >= 2,
        "the mixed scenario needs --connections of at least 2: half claim, half order"
    );
    let half = |connections| Options {
        scenario: options.scenario,
        url: None,
        connections,
        duration: options.duration,
        healthz: false,
    };
    let claiming = half(options.connections / 2);
    let ordering = half(options.connections - options.connections / 2);
    // Both prepared first (the orders' keys take a while to import), so
    // that the two halves run over the same seconds.
    let claims_run = claims::Claims::prepare(target).await?;
    let orders_run = orders::Orders::prepare(target, options).await?;
    let (claims, orders) = tokio::try_join!(
        claims_run.drive(target, &claiming, progress),
        orders_run.drive(target, &ordering, progress),
    )?;
    let claims_checks = claims_run.verify(target, &claims).await?;
    let orders_checks = orders_run.verify(target, &orders).await?;
    let parts = vec![
        ("claims", claims.ops_per_s()),
        ("orders", orders.ops_per_s()),
    ];
    let mut tally = load::Tally::default();
    tally.add("claims ", claims);
    tally.add("orders ", orders);
    tally.latencies_us.sort_unstable();
    Ok(Mixed {
        tally,
        verdict: both(claims_checks, orders_checks),
        parts,
    })
}

/// One verdict of two: broken if either is, each line naming its half.
fn both(claims: Verdict, orders: Verdict) -> Verdict {
    let name = |half: &str, lines: Vec<String>| -> Vec<String> {
        lines.into_iter().map(|l| format!("{half}: {l}")).collect()
    };
    match (claims, orders) {
        (Ok(c), Ok(o)) => Ok([name("claims", c), name("orders", o)].concat()),
        (Err(c), Ok(_)) => Err(name("claims", c)),
        (Ok(_), Err(o)) => Err(name("orders", o)),
        (Err(c), Err(o)) => Err([name("claims", c), name("orders", o)].concat()),
    }
}
