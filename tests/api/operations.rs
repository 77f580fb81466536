//! `/healthz`, `/readyz`, `/metrics`.

use crate::{
    helpers::{Backend, TestApp, eventually, status_and_json},
    on_every_backend,
};

on_every_backend!(
    health_and_readiness_answer_when_the_database_does,
    metrics_count_requests_and_claim_outcomes,
    metrics_show_jobs_and_deliveries,
    readiness_stays_up_while_mail_is_down,
);

async fn health_and_readiness_answer_when_the_database_does(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) =
        status_and_json(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) =
        status_and_json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}

/// Reads one sample, e.g. `allot_coupon_claims_total{outcome="granted"}`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_count_requests_and_claim_outcomes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scrape = || async {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        response.text().await.unwrap()
    };
    let outcomes = ["granted", "already_claimed", "out_of_stock", "not_found"];
    // Metrics are process-wide and tests run in parallel: compare deltas,
    // which can only grow by at least what this test did.
    let before = scrape().await;
    app.create_coupon("METERED", 1).await;
    app.claim("a", "METERED").await; // granted
    app.claim("a", "METERED").await; // already_claimed
    app.claim("b", "METERED").await; // out_of_stock
    app.claim("b", "MISSING").await; // not_found
    let after = scrape().await;
    for outcome in outcomes {
        let series = format!("allot_coupon_claims_total{{outcome=\"{outcome}\"}}");
        assert!(
            sample(&after, &series) >= sample(&before, &series) + 1.0,
            "{series} did not grow:\n{after}"
        );
    }
    let created = r#"allot_http_requests_total{method="POST",route="/api/coupons",status="201"}"#;
    assert!(
        sample(&after, created) >= sample(&before, created) + 1.0,
        "{after}"
    );
    let latency = r#"allot_http_request_duration_seconds_count{method="POST",route="/api/coupons/claim",status="409"}"#;
    assert!(
        sample(&after, latency) >= sample(&before, latency) + 2.0,
        "{after}"
    );
    assert!(
        after.contains("allot_http_request_duration_seconds_bucket{"),
        "no histogram buckets:\n{after}"
    );
}

/// Readiness follows the database; liveness does not. SQLite has no server
/// to lose (its open file stays readable), so this runs on the server backends.
async fn readiness_fails_when_the_database_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let get = |path: &'static str| {
        let request = app.client.get(app.url(path));
        async move { status_and_json(request.send().await.unwrap()).await }
    };
    assert_eq!(get("/readyz").await.0, 200);
    app.db.drop_database();
    let (status, body) = get("/readyz").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("database_unavailable"))
    );
    assert_eq!(get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_fails_when_the_postgres_database_is_gone() {
    if Backend::Postgres.available() {
        readiness_fails_when_the_database_is_gone(Backend::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_fails_when_the_mysql_database_is_gone() {
    if Backend::MySql.available() {
        readiness_fails_when_the_database_is_gone(Backend::MySql).await;
    }
}

/// The server ends a connection while a request waits inside it (what a
/// fast shutdown or a failover does: `pg_terminate_backend` on PostgreSQL,
/// `KILL` on MariaDB). The client gets 503 with `Retry-After`, never a 500,
/// and the next request works without restarting allot. SQLite has no
/// server to end a connection.
async fn a_connection_ended_by_the_server_is_503_then_recovers(backend: Backend) {
    use sqlx::{Connection, Executor};

    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_coupon("HOLD", 5).await.status(), 201);
    let url = app.db.url.clone();
    let claim = {
        let (client, addr) = (app.client.clone(), app.addr);
        move |user: &'static str| {
            let client = client.clone();
            tokio::spawn(async move { crate::helpers::claim(&client, addr, user, "HOLD").await })
        }
    };
    // Hold the coupon's row lock, so that the claim waits in the database.
    let lock = "select 1 from coupons where name = 'HOLD' for update";
    let response = match backend {
        Backend::Postgres => {
            let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
            holder.execute("begin").await.unwrap();
            holder.execute(lock).await.unwrap();
            let waiting = claim("u-1");
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut pid = None;
            crate::helpers::eventually("the claim to wait on the lock", async || {
                pid = sqlx::query_scalar::<_, i32>(
                    "select pid from pg_stat_activity
                      where datname = current_database() and wait_event_type = 'Lock'",
                )
                .fetch_optional(&mut admin)
                .await
                .unwrap();
                pid.is_some()
            })
            .await;
            sqlx::query("select pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut admin)
                .await
                .unwrap();
            let response = waiting.await.unwrap();
            holder.execute("rollback").await.unwrap();
            response
        }
        Backend::MySql => {
            let mut holder = sqlx::MySqlConnection::connect(&url).await.unwrap();
            holder.execute("begin").await.unwrap();
            holder.execute(lock).await.unwrap();
            let waiting = claim("u-1");
            let mut admin = sqlx::MySqlConnection::connect(&url).await.unwrap();
            let mut id = None;
            crate::helpers::eventually("the claim to wait on the lock", async || {
                id = sqlx::query_scalar::<_, i64>(
                    "select id from information_schema.processlist
                      where db = database() and id <> connection_id()
                        and info like 'select remaining_amount from coupons%'",
                )
                .fetch_optional(&mut admin)
                .await
                .unwrap();
                id.is_some()
            })
            .await;
            admin
                .execute(sqlx::AssertSqlSafe(format!("kill {}", id.unwrap())))
                .await
                .unwrap();
            let response = waiting.await.unwrap();
            holder.execute("rollback").await.unwrap();
            response
        }
        Backend::Sqlite => unreachable!("no server to end a connection"),
    };
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()));
    // The pool replaces the connection; no restart needed.
    let (status, body) = status_and_json(claim("u-2").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_connection_ended_by_the_server_is_503_then_recovers() {
    if Backend::Postgres.available() {
        a_connection_ended_by_the_server_is_503_then_recovers(Backend::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mysql_connection_ended_by_the_server_is_503_then_recovers() {
    if Backend::MySql.available() {
        a_connection_ended_by_the_server_is_503_then_recovers(Backend::MySql).await;
    }
}

async fn queue_test_mail(app: &TestApp) -> (allot::db::Db, i64) {
    let db =
        allot::db::Db::connect(&allot::config::Settings::for_database(app.db.url.clone()).database)
            .await
            .unwrap();
    let job = allot::notices::email_job(
        "buyer@example.com",
        "test",
        serde_json::json!({"address": "x"}),
        3,
    );
    let id = allot::jobs::enqueue_now(&db, &job).await.unwrap().unwrap();
    (db, id)
}

/// Waits for the server's own worker to reach a state (it polls every 100 ms).
async fn until_job_state(db: &allot::db::Db, id: i64, state: &str) {
    for _ in 0..300 {
        if allot::jobs::find(db, id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str()
            == state
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached {state}");
}

async fn metrics_show_jobs_and_deliveries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (db, id) = queue_test_mail(&app).await;
    until_job_state(&db, id, "done").await;
    // A job due tomorrow stays queued: counted under its kind.
    let mut later = allot::jobs::NewJob::new("later", serde_json::json!({}), 3);
    later.run_at = allot::clock::now_ms() + 86_400_000;
    allot::jobs::enqueue_now(&db, &later).await.unwrap();
    let mut metrics = String::new();
    // Gauges are refreshed on the worker's poll tick.
    for _ in 0..100 {
        metrics = app.metrics().await;
        if metrics.contains(r#"allot_jobs_by_kind{kind="later",state="queued"} 1"#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for series in [
        r#"allot_job_attempts_total{kind="email",outcome="done"}"#,
        r#"allot_jobs{state="done"}"#,
        r#"allot_jobs{state="dead"}"#,
        "allot_job_oldest_due_age_seconds",
        r#"allot_job_delivery_latency_seconds_count{kind="email"}"#,
        "allot_worker_paused ",
        "allot_worker_jobs_in_flight ",
        r#"allot_db_connections{pool="#,
        "allot_db_connections_max{pool=",
        r#"allot_jobs_by_kind{kind="later",state="queued"} 1"#,
        r#"allot_mail_sends_total{transport="file",outcome="sent"}"#,
        r#"allot_mail_send_duration_seconds_count{transport="file"}"#,
        // One per process, shared by the apps this test binary runs: present.
        r#"allot_process_state{state="ready"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    // The worker's heartbeat moves on each round of its loop.
    let heartbeat = async || {
        let metrics = app.metrics().await;
        let line = metrics
            .lines()
            .find(|line| line.starts_with("allot_worker_heartbeat_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no worker heartbeat:\n{metrics}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let first = heartbeat().await;
    eventually("the worker's heartbeat to move", async || {
        heartbeat().await > first
    })
    .await;
}

/// Mail down is not service down: the failure shows in job state and
/// metrics, while the API stays ready.
async fn readiness_stays_up_while_mail_is_down(backend: Backend) {
    let port = crate::helpers::free_port();
    let app = TestApp::spawn_with(backend, |s| {
        s.mail.transport = allot::config::MailTransport::Smtp {
            url: allot::config::Secret::from(format!("smtp://127.0.0.1:{port}")),
        };
    })
    .await;
    let (db, id) = queue_test_mail(&app).await;
    for _ in 0..300 {
        let job = allot::jobs::find(&db, id).await.unwrap().unwrap();
        if job.attempts >= 1 && job.state.as_str() == "queued" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let job = allot::jobs::find(&db, id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("queued", 1), "{job:?}");
    let (status, body) =
        status_and_json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}
