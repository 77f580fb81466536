//! The command line as a user types it.

use std::process::Output;

use crate::{
    helpers::{Backend, TestDb, World, allot_command},
    on_every_backend,
};

on_every_backend!(
    coupons_can_be_created_and_shown_from_the_command_line,
    migrate_is_repeatable,
    dead_letters_are_listed_explained_and_redriven_from_the_command_line,
    bench_starts_a_server_loads_it_and_verifies_what_it_did,
);

fn allot(dir: &std::path::Path, db: &TestDb, args: &[&str]) -> Output {
    allot_command(dir)
        .args(args)
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .expect("run allot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn coupons_can_be_created_and_shown_from_the_command_line(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();

    let out = allot(dir.path(), &db, &["coupons", "create", "PROMO_CLI", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PROMO_CLI"));

    let out = allot(dir.path(), &db, &["coupons", "create", "PROMO_CLI", "3"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: a coupon with this name already exists"
    );

    let out = allot(dir.path(), &db, &["coupons", "create", "ZERO", "0"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: amount must be at least 1, got 0"
    );
    let out = allot(dir.path(), &db, &["coupons", "create", "NEGATIVE", "-2"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: amount must be at least 1, got -2"
    );

    let out = allot(dir.path(), &db, &["coupons", "show", "PROMO_CLI", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({"name": "PROMO_CLI", "amount": 3, "remaining_amount": 3, "claimed_by": []})
    );
    let out = allot(dir.path(), &db, &["coupons", "show", "PROMO_CLI"]);
    assert!(text(&out.stdout).contains("remaining_amount:  3"));

    let out = allot(dir.path(), &db, &["coupons", "show", "NOPE"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: coupon NOPE: no coupon with this name"
    );
}

async fn migrate_is_repeatable(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = allot(dir.path(), &db, &["migrate"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// Settings errors name the variable to fix and stop before doing anything.
#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ALLOT_DATABASE_URL", "redis://localhost"),
        ("ALLOT_LISTEN", "nowhere"),
        ("ALLOT_SHUTDOWN_GRACE", "soon"),
        ("ALLOT_DATABASE_MAX_CONNECTIONS", "many"),
        ("ALLOT_LOG_FORMAT", "xml"),
    ];
    for (var, value) in cases {
        let out = allot_command(dir.path())
            .arg("migrate")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // A value of digits is still a string: the reason is about the value.
    let out = allot_command(dir.path())
        .arg("migrate")
        .env("ALLOT_LISTEN", "8080")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("is not host:port"),
        "{}",
        text(&out.stderr)
    );
    // A typo in the settings file is an error, not silently ignored.
    std::fs::write(
        dir.path().join("typo.toml"),
        "databse_url = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let out = allot_command(dir.path())
        .args(["migrate", "--config", "typo.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("databse_url"),
        "{}",
        text(&out.stderr)
    );
    // Nothing was created in the working directory by the refused runs.
    assert!(!dir.path().join("allot.db").exists());
}

#[test]
fn settings_file_is_read_and_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("allot.toml"),
        "database_url = \"sqlite://from-file.db\"\n",
    )
    .unwrap();
    let out = allot_command(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("from-file.db").exists());

    let out = allot_command(dir.path())
        .arg("migrate")
        .env("ALLOT_DATABASE_URL", "sqlite://from-env.db")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("from-env.db").exists());

    let out = allot_command(dir.path())
        .args(["migrate", "--config", "missing.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.toml"));
}

async fn dead_letters_are_listed_explained_and_redriven_from_the_command_line(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        allot_command(dir.path())
            .args(args)
            .env("ALLOT_DATABASE_URL", &world.settings.database.url)
            .output()
            .unwrap()
    };

    let out = run(&["mail", "test", "not an address"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: invalid recipient address"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["mail", "test", "buyer@example.com"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value =
        serde_json::from_slice(&run(&["jobs", "list", "--json"]).stdout).unwrap();
    let job = &listed[0];
    for field in ["id", "kind", "state", "attempts", "last_error", "run_at"] {
        assert!(job.get(field).is_some(), "{field} missing in {job}");
    }
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("email"), Some("queued"))
    );
    let mail_id = job["id"].as_i64().unwrap().to_string();
    let out = run(&["jobs", "retry", &mail_id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is queued, not dead"),
        "{}",
        text(&out.stderr)
    );

    // A job our code cannot handle dies at once.
    let dead_id = world
        .queue_email(
            "buyer@example.com",
            "no_such_template",
            serde_json::json!({}),
        )
        .await;
    world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    let out = run(&["jobs", "list", "--state", "dead"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("dead") && table.contains("no_such_template"),
        "{table}"
    );
    let out = run(&["jobs", "show", &dead_id.to_string()]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("attempt   1") && shown.contains("dead"),
        "{shown}"
    );

    let out = run(&["jobs", "retry", "--all-dead"]);
    assert_eq!(text(&out.stdout).trim(), "requeued 1 dead job(s)");
    let queued: serde_json::Value =
        serde_json::from_slice(&run(&["jobs", "list", "--state", "queued", "--json"]).stdout)
            .unwrap();
    assert!(
        queued
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == dead_id),
        "{queued}"
    );

    let out = run(&["jobs", "discard", &dead_id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["jobs", "discard", &dead_id.to_string()]);
    assert_eq!(text(&out.stderr).trim(), format!("error: no job {dead_id}"));
}

/// A database that cannot be reached or opened is named in one line with
/// its real cause, said once: no "pool timed out" hiding a refused
/// connection, no server source-file line numbers.
#[test]
fn an_unreachable_database_is_explained_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, &str)> = vec![(
        format!("sqlite://{}/no/such/dir/x.db", dir.path().display()),
        // SQLite says only "unable to open database file"; allot asks the
        // file system why.
        "no/such/dir/x.db: No such file or directory",
    )];
    if Backend::Postgres.available() {
        let mut url = url::Url::parse(&std::env::var("ALLOT_TEST_POSTGRES_URL").unwrap()).unwrap();
        url.set_username("allot_no_such_role").unwrap();
        cases.push((
            url.to_string(),
            "role \"allot_no_such_role\" does not exist",
        ));
        let port = crate::helpers::free_port();
        cases.push((
            format!("postgres://x@127.0.0.1:{port}/x"),
            "Connection refused",
        ));
    }
    if Backend::MySql.available() {
        let mut url = url::Url::parse(&std::env::var("ALLOT_TEST_MYSQL_URL").unwrap()).unwrap();
        url.set_path("allot_t_no_such_database");
        cases.push((
            url.to_string(),
            "Unknown database 'allot_t_no_such_database'",
        ));
    }
    for (database_url, cause) in cases {
        let out = allot_command(dir.path())
            .arg("migrate")
            .env("ALLOT_DATABASE_URL", &database_url)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{database_url}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: cannot "), "{stderr}");
        assert_eq!(stderr.matches(cause).count(), 1, "{cause:?} once: {stderr}");
        assert!(!stderr.contains(" at line "), "{stderr}");
    }
}

/// `allot bench` on a server it starts (claims, orders, mixed) or on
/// workers it runs (jobs): the JSON report names the scenario, counts what
/// was done, and the database agrees with it.
async fn bench_starts_a_server_loads_it_and_verifies_what_it_did(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    for scenario in ["claims", "orders", "jobs", "mixed"] {
        let out = allot(
            dir.path(),
            &db,
            &[
                "bench",
                scenario,
                "--duration",
                "1s",
                "--connections",
                "4",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["scenario"], scenario, "{report}");
        assert_eq!(report["verified"], true, "{report}");
        assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
        assert!(report["ops_per_s"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["p50_ms"].as_f64().unwrap() <= report["p99_ms"].as_f64().unwrap());
        assert_eq!(report["errors"], serde_json::json!({}), "{report}");
        if scenario == "mixed" {
            // Both halves ran, and each was verified on its own.
            for half in ["claims", "orders"] {
                assert!(report["parts"][half].as_f64().unwrap() > 0.0, "{report}");
                let checked = report["checks"].as_array().unwrap().iter();
                let mut checked = checked.filter_map(|c| c.as_str());
                assert!(
                    checked.any(|c| c.starts_with(&format!("{half}: "))),
                    "{report}"
                );
            }
        }
    }
    let out = allot(
        dir.path(),
        &db,
        &["bench", "mixed", "--duration", "1s", "--connections", "1"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least 2"),
        "{}",
        text(&out.stderr)
    );
}
