//! The key bank: importing pools, stock, revoking, and vending each key once.

use std::collections::HashSet;

use allot::keys::{self, Assignment, Sku};

use crate::{
    helpers::{Backend, World, allot_command, race},
    on_every_backend,
};

on_every_backend!(
    an_import_reports_blank_lines_and_duplicates_and_keeps_going,
    keys_are_vended_oldest_first,
    a_sell_out_race_never_assigns_a_key_twice,
    a_revoked_key_is_never_vended,
    a_csv_without_a_license_key_column_imports_nothing,
);

fn allot(world: &World, dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = allot_command(dir)
        .args(args)
        .env("ALLOT_DATABASE_URL", &world.settings.database.url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stock_json(world: &World, dir: &std::path::Path) -> serde_json::Value {
    let (ok, stdout, stderr) = allot(world, dir, &["keys", "stock", "--json"]);
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

async fn an_import_reports_blank_lines_and_duplicates_and_keeps_going(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let long = "K".repeat(300);
    std::fs::write(
        dir.path().join("keys.csv"),
        format!("license_key,course\nAAAA-0001,101\nAAAA-0002,101\n\nAAAA-0001,101\n\"AAAA,0003\",101\n{long},101\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = allot(
        &world,
        dir.path(),
        &["keys", "import", "keys.csv", "--sku", "course-101"],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 3 key(s) into SKU course-101"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped 1 blank line(s): line 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped 1 duplicate(s) of earlier lines: line 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped line 7: license key must be at most 255 characters"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("AAAA-0001"),
        "keys are never printed: {stdout}"
    );

    // One key per line; a key from the first file is already in the pool.
    std::fs::write(
        dir.path().join("keys.txt"),
        "BBBB-0001\r\n  BBBB-0002  \nAAAA-0002\nBBBB-0001\n",
    )
    .unwrap();
    let (ok, stdout, _) = allot(
        &world,
        dir.path(),
        &["keys", "import", "keys.txt", "--sku", "course-202"],
    );
    assert!(ok);
    assert!(
        stdout.contains("imported 2 key(s) into SKU course-202"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped 1 key(s) already in the pool: line 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imported 1 key(s) without the spaces around them: line 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped 1 duplicate(s) of earlier lines: line 4"),
        "{stdout}"
    );

    assert_eq!(
        stock_json(&world, dir.path()),
        serde_json::json!([
            {"product_sku": "course-101", "available": 3, "assigned": 0, "revoked": 0},
            {"product_sku": "course-202", "available": 2, "assigned": 0, "revoked": 0},
        ])
    );
    let (ok, _, stderr) = allot(
        &world,
        dir.path(),
        &["keys", "import", "missing.csv", "--sku", "x"],
    );
    assert!(!ok);
    assert!(
        stderr.starts_with("error: cannot open missing.csv"),
        "{stderr}"
    );
}

async fn import_lines(world: &World, sku: &str, keys: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.txt"), keys.join("\n")).unwrap();
    let (ok, _, stderr) = allot(
        world,
        dir.path(),
        &["keys", "import", "k.txt", "--sku", sku],
    );
    assert!(ok, "{stderr}");
}

async fn vend_one(world: &World, sku: &str, order: &str) -> Option<String> {
    let mut tx = world.db.begin().await.unwrap();
    let to = Assignment {
        email: "buyer@example.com",
        order_id: order,
        coupon_code: None,
    };
    let vended = keys::vend(
        &mut tx,
        &Sku::parse(sku).unwrap(),
        &to,
        allot::clock::now_ms(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    vended.map(|v| v.key.expose().to_string())
}

async fn keys_are_vended_oldest_first(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let imported: Vec<String> = (1..=5).map(|n| format!("KEY-{n:04}")).collect();
    import_lines(&world, "course-101", &imported).await;
    import_lines(&world, "other", &["OTHER-1".to_string()]).await;
    let mut vended = Vec::new();
    for n in 0..3 {
        vended.push(
            vend_one(&world, "course-101", &format!("order-{n}"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(vended, imported[..3]);
    assert_eq!(vend_one(&world, "no-such-sku", "order-x").await, None);
}

/// Two SKUs imported one after the other, the table analysed: a sale of
/// the second must go straight to its keys, not read through the first's
/// (the planner's guess for a bare `order by id`), in the plan PostgreSQL
/// makes for one execution and in the one it caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sells_the_sku_imported_second_without_reading_the_first() {
    use sqlx::{Connection, Executor};
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    let first: Vec<String> = (0..20_000).map(|n| format!("FIRST-{n:06}")).collect();
    import_lines(&world, "first", &first).await;
    let second: Vec<String> = (0..5).map(|n| format!("SECOND-{n}")).collect();
    import_lines(&world, "second", &second).await;
    let mut conn = sqlx::PgConnection::connect(&world.settings.database.url)
        .await
        .unwrap();
    conn.execute("analyze license_keys").await.unwrap();
    let select = keys::oldest_available(allot::db::Backend::Postgres, "id")
        .replacen('?', "$1", 1)
        .replacen('?', "$2", 1);
    for mode in ["force_custom_plan", "force_generic_plan"] {
        conn.execute(sqlx::AssertSqlSafe(format!("set plan_cache_mode = {mode}")))
            .await
            .unwrap();
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "explain (format json) {select}"
        )))
        .bind("second")
        .bind(32_i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let plan = plan.to_string();
        assert!(
            plan.contains("license_keys_available") && !plan.contains("license_keys_pkey"),
            "{mode}: {plan}"
        );
    }
    assert_eq!(
        vend_one(&world, "second", "order-1").await.as_deref(),
        Some("SECOND-0")
    );
}

async fn a_sell_out_race_never_assigns_a_key_twice(backend: Backend) {
    let world = std::sync::Arc::new(World::new(backend, |_| {}).await);
    let imported: Vec<String> = (1..=10).map(|n| format!("FLASH-{n:04}")).collect();
    import_lines(&world, "flash", &imported).await;
    let results = race(50, |i| {
        let world = world.clone();
        async move { vend_one(&world, "flash", &format!("order-{i}")).await }
    })
    .await;
    let won: Vec<String> = results.into_iter().flatten().collect();
    assert_eq!(won.len(), 10, "every key sold, none twice: {won:?}");
    let distinct: HashSet<&String> = won.iter().collect();
    assert_eq!(distinct.len(), 10, "a key was assigned twice");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        stock_json(&world, dir.path()),
        serde_json::json!([{"product_sku": "flash", "available": 0, "assigned": 10, "revoked": 0}])
    );
}

async fn a_revoked_key_is_never_vended(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    import_lines(
        &world,
        "course-101",
        &["LEAKED-1".to_string(), "GOOD-2".to_string()],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, _) = allot(&world, dir.path(), &["keys", "revoke", "LEAKED-1"]);
    assert!(ok);
    assert_eq!(stdout.trim(), "revoked the key (it was available)");
    let (ok, stdout, _) = allot(&world, dir.path(), &["keys", "revoke", "LEAKED-1"]);
    assert!(ok);
    assert_eq!(stdout.trim(), "the key was already revoked");
    let (ok, _, stderr) = allot(&world, dir.path(), &["keys", "revoke", "NEVER-SEEN"]);
    assert!(!ok);
    assert_eq!(stderr.trim(), "error: no such key in any pool");

    assert_eq!(
        vend_one(&world, "course-101", "order-1").await.as_deref(),
        Some("GOOD-2")
    );
    assert_eq!(vend_one(&world, "course-101", "order-2").await, None);
    assert_eq!(
        stock_json(&world, dir.path()),
        serde_json::json!([{"product_sku": "course-101", "available": 0, "assigned": 1, "revoked": 1}])
    );
}

/// A CSV whose header names no `license_key` column is refused whole: its
/// header and rows are not keys, and no buyer may be mailed one.
async fn a_csv_without_a_license_key_column_imports_nothing(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("serials.csv"),
        "serial,product\nS-1,x\nS-2,y\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = allot(
        &world,
        dir.path(),
        &["keys", "import", "serials.csv", "--sku", "course-101"],
    );
    assert!(!ok, "{stdout}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("license_key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("S-1"),
        "row values (keys) are never printed: {stderr}"
    );
    assert_eq!(stock_json(&world, dir.path()), serde_json::json!([]));
}
