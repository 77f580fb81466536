//! Counting what the outbox did, fast at any size: attempts that finished,
//! per minute, kind, outcome and latency bucket (enqueue to finish), rolled
//! up into `job_stats` once a minute has been over for a minute (attempts
//! of that minute have all been recorded by then), so that statistics never
//! scan the outbox. Complete hours are summed again into `job_stats_hourly`,
//! so a day is 24 rows per kind and bucket rather than 1440. Minutes not
//! rolled up yet are counted live from `job_attempts` (a minute or two of
//! rows). Everything is computed from the database: several processes see
//! the same numbers, and a restart loses nothing.

use super::attempts::AttemptOutcome;
use crate::{
    db::{Backend, Db, read_state},
    on_db, on_tx,
};

/// Upper bounds (exclusive, milliseconds) of the latency buckets; the last
/// bucket holds everything slower.
pub const BUCKET_BOUNDS_MS: [i64; 17] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000, 21_600_000, 86_400_000,
];

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// The bucket of `a.finished_at - j.created_at`, as SQL.
fn bucket_sql() -> String {
    let mut case = String::from("case");
    for (i, bound) in BUCKET_BOUNDS_MS.iter().enumerate() {
        case.push_str(&format!(
            " when a.finished_at - j.created_at < {bound} then {i}"
        ));
    }
    case.push_str(&format!(" else {} end", BUCKET_BOUNDS_MS.len()));
    case
}

/// Attempts of one kind, outcome and latency bucket.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Finished {
    pub kind: String,
    /// `done`, `retry` or `dead`.
    #[sqlx(try_from = "String")]
    pub outcome: AttemptOutcome,
    pub bucket: i32,
    pub count: i64,
}

/// How far the roll-up got: every attempt that finished before `minutes`
/// is counted in `job_stats`, and every minute before `hours` (a whole
/// hour, never after `minutes`) is summed into `job_stats_hourly`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    #[sqlx(rename = "rolled_until")]
    pub minutes: i64,
    #[sqlx(rename = "hours_rolled_until")]
    pub hours: i64,
}

const PROGRESS: &str =
    "select rolled_until, hours_rolled_until from job_stats_progress where id = 1";

/// Rolls up every complete minute that ended at least a minute before
/// `now`, and every complete hour of those minutes. Several processes may
/// call it: the progress row is locked, so each minute is counted once.
/// Returns the new progress.
pub async fn roll_up(db: &Db, now: i64) -> Result<Progress, sqlx::Error> {
    let cutoff = (now - MINUTE) - (now - MINUTE).rem_euclid(MINUTE);
    let mut tx = db.begin().await?;
    let select = format!("{PROGRESS}{}", tx.backend().for_update());
    let rolled: Progress = on_tx!(&mut tx, |conn, sql| {
        sqlx::query_as(sql(select)).fetch_one(conn).await
    })?;
    if cutoff <= rolled.minutes {
        tx.rollback().await?;
        return Ok(rolled);
    }
    let insert = format!(
        "insert into job_stats (minute, kind, outcome, bucket, count)
         select a.finished_at - (a.finished_at % {MINUTE}), j.kind, a.outcome, {}, count(*)
           from job_attempts a join jobs j on j.id = a.job_id
          where a.finished_at >= ? and a.finished_at < ? and a.outcome in ('done', 'retry', 'dead')
          group by 1, 2, 3, 4",
        bucket_sql()
    );
    on_tx!(&mut tx, |conn, sql| {
        sqlx::query(sql(insert))
            .bind(rolled.minutes)
            .bind(cutoff)
            .execute(conn)
            .await
            .map(drop)
    })?;
    let hours = cutoff - cutoff.rem_euclid(HOUR);
    if hours > rolled.hours {
        let insert = format!(
            "insert into job_stats_hourly (hour, kind, outcome, bucket, count)
             select minute - (minute % {HOUR}), kind, outcome, bucket, {}
               from job_stats where minute >= ? and minute < ?
              group by 1, 2, 3, 4",
            sum_of_counts(tx.backend())
        );
        on_tx!(&mut tx, |conn, sql| {
            sqlx::query(sql(insert))
                .bind(rolled.hours)
                .bind(hours)
                .execute(conn)
                .await
                .map(drop)
        })?;
    }
    let progress = Progress {
        minutes: cutoff,
        hours: hours.max(rolled.hours),
    };
    on_tx!(&mut tx, |conn, sql| {
        sqlx::query(sql(
            "update job_stats_progress set rolled_until = ?, hours_rolled_until = ? where id = 1",
        ))
        .bind(progress.minutes)
        .bind(progress.hours)
        .execute(conn)
        .await
        .map(drop)
    })?;
    tx.commit().await?;
    Ok(progress)
}

/// `sum(count)` as a 64-bit integer: the servers widen a bigint's sum.
fn sum_of_counts(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => "cast(sum(count) as signed)",
        Backend::Postgres | Backend::Sqlite => "cast(sum(count) as bigint)",
    }
}

/// How far the roll-up got. Read once per answer, so that every window of
/// it splits hours, minutes and live counts at the same points.
pub async fn progress(db: &Db) -> Result<Progress, sqlx::Error> {
    on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(PROGRESS)).fetch_one(pool).await
    })
}

/// Attempts that finished from `from` (rounded down to its minute) to now,
/// given the roll-up's `progress`: whole hours from `job_stats_hourly`, the
/// minutes around them from `job_stats`, the rest live from `job_attempts`.
pub async fn finished_since(
    db: &Db,
    from: i64,
    progress: Progress,
) -> Result<Vec<Finished>, sqlx::Error> {
    let from = from - from.rem_euclid(MINUTE);
    let total = sum_of_counts(db.backend());
    let mut finished = Vec::new();
    // Hours [first_hour, progress.hours) are summed; the minutes before
    // and after them are read one by one.
    let first_hour = from + (HOUR - from.rem_euclid(HOUR)).rem_euclid(HOUR);
    let (head_end, tail_start) = if first_hour < progress.hours {
        let select = format!(
            "select kind, outcome, bucket, {total} as count from job_stats_hourly
              where hour >= ? and hour < ? group by kind, outcome, bucket"
        );
        let rows: Vec<Finished> = on_db!(db, read, |pool, sql| {
            sqlx::query_as(sql(select))
                .bind(first_hour)
                .bind(progress.hours)
                .fetch_all(pool)
                .await
        })?;
        finished.extend(rows);
        (first_hour, progress.hours)
    } else {
        (from, from)
    };
    if from < progress.minutes {
        let select = format!(
            "select kind, outcome, bucket, {total} as count from job_stats
              where (minute >= ? and minute < ?) or (minute >= ? and minute < ?)
              group by kind, outcome, bucket"
        );
        let rows: Vec<Finished> = on_db!(db, read, |pool, sql| {
            sqlx::query_as(sql(select))
                .bind(from)
                .bind(head_end)
                .bind(tail_start)
                .bind(progress.minutes)
                .fetch_all(pool)
                .await
        })?;
        finished.extend(rows);
    }
    let live = format!(
        "select j.kind, a.outcome, {} as bucket, count(*) as count
           from job_attempts a join jobs j on j.id = a.job_id
          where a.finished_at >= ? and a.outcome in ('done', 'retry', 'dead')
          group by 1, 2, 3",
        bucket_sql()
    );
    let rows: Vec<Finished> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(live))
            .bind(from.max(progress.minutes))
            .fetch_all(pool)
            .await
    })?;
    finished.extend(rows);
    Ok(finished)
}

/// Deliveries that finished in one minute, for the dashboard's chart.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Minute {
    /// Its start, in ms.
    pub minute: i64,
    pub done: i64,
    /// Retries and dead letters.
    pub failed: i64,
    /// Median enqueue-to-done latency of the minute's deliveries.
    pub p50_ms: Option<f64>,
}

/// The last `count` minutes up to `now` (the current one included), oldest
/// first, every minute present: rolled-up minutes from `job_stats`, the
/// rest live from `job_attempts`.
pub async fn per_minute(db: &Db, now: i64, count: i64) -> Result<Vec<Minute>, sqlx::Error> {
    let current = now - now.rem_euclid(MINUTE);
    let from = current - (count.max(1) - 1) * MINUTE;
    let rolled = progress(db).await?.minutes;
    type Row = (i64, String, i32, i64);
    let mut rows: Vec<Row> = Vec::new();
    if from < rolled {
        let select = format!(
            "select minute, outcome, bucket, {} from job_stats
              where minute >= ? and minute < ? group by minute, outcome, bucket",
            sum_of_counts(db.backend())
        );
        rows.extend(on_db!(db, read, |pool, sql| {
            sqlx::query_as::<_, Row>(sql(select))
                .bind(from)
                .bind(rolled)
                .fetch_all(pool)
                .await
        })?);
    }
    let live = format!(
        "select a.finished_at - (a.finished_at % {MINUTE}), a.outcome, {}, count(*)
           from job_attempts a join jobs j on j.id = a.job_id
          where a.finished_at >= ? and a.outcome in ('done', 'retry', 'dead')
          group by 1, 2, 3",
        bucket_sql()
    );
    rows.extend(on_db!(db, read, |pool, sql| {
        sqlx::query_as::<_, Row>(sql(live))
            .bind(from.max(rolled))
            .fetch_all(pool)
            .await
    })?);
    let mut minutes: Vec<(Minute, Vec<(i32, i64)>)> = (0..count.max(1))
        .map(|i| {
            let minute = Minute {
                minute: from + i * MINUTE,
                done: 0,
                failed: 0,
                p50_ms: None,
            };
            (minute, Vec::new())
        })
        .collect();
    for (minute, outcome, bucket, n) in rows {
        let Some((counted, buckets)) = usize::try_from((minute - from) / MINUTE)
            .ok()
            .and_then(|i| minutes.get_mut(i))
        else {
            continue; // finished after `now` (another process's clock)
        };
        if read_state::<AttemptOutcome>(outcome)? == AttemptOutcome::Done {
            counted.done += n;
            buckets.push((bucket, n));
        } else {
            counted.failed += n;
        }
    }
    Ok(minutes
        .into_iter()
        .map(|(mut minute, buckets)| {
            minute.p50_ms = quantile(&buckets, 0.5);
            minute
        })
        .collect())
}

/// The `q` quantile (0…1) of the latencies counted in `buckets` (bucket,
/// count), interpolated within its bucket as Prometheus does; `None` when
/// nothing was counted. Never NaN.
pub fn quantile(buckets: &[(i32, i64)], q: f64) -> Option<f64> {
    let total: i64 = buckets.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return None;
    }
    let mut counts = vec![0i64; BUCKET_BOUNDS_MS.len() + 1];
    for (bucket, n) in buckets {
        let index = (*bucket).clamp(0, BUCKET_BOUNDS_MS.len() as i32) as usize;
        counts[index] += n;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0i64;
    for (index, n) in counts.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lower = if index == 0 {
                0.0
            } else {
                BUCKET_BOUNDS_MS[index - 1] as f64
            };
            let Some(upper) = BUCKET_BOUNDS_MS.get(index) else {
                return Some(lower); // slower than the last bound
            };
            let within = ((rank - seen as f64) / *n as f64).clamp(0.0, 1.0);
            return Some(lower + (*upper as f64 - lower) * within);
        }
        seen += n;
    }
    BUCKET_BOUNDS_MS.last().map(|b| *b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(3, 0)], 0.5), None);
        // 100 attempts between 50 and 100 ms: the median is 75 ms.
        assert_eq!(quantile(&[(3, 100)], 0.5), Some(75.0));
        // 99 fast, 1 slow: p50 fast, p99 at the top of the fast bucket.
        let mixed = [(0, 99), (10, 1)];
        assert!(quantile(&mixed, 0.5).unwrap() < 10.0);
        assert_eq!(quantile(&mixed, 0.99), Some(10.0));
        assert_eq!(quantile(&mixed, 1.0), Some(30_000.0));
        // Beyond the last bound: its lower edge, a finite number.
        assert_eq!(quantile(&[(17, 5)], 0.99), Some(86_400_000.0));
    }
}
