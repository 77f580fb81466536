//! Several real `allot serve` processes on one database, and shutdown.

use std::collections::HashSet;

use crate::{
    helpers::{
        Backend, ServeProcess, TestDb, assert_invariant, claim, client, get_coupon, race,
        status_and_json,
    },
    on_every_backend,
};

on_every_backend!(
    two_serve_processes_race_for_one_coupon,
    sigterm_stops_the_server_cleanly
);

/// Correctness must not depend on in-process state: two servers on one
/// database, 60 buyers each claiming on both at once, 10 units.
async fn two_serve_processes_race_for_one_coupon(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let first = ServeProcess::start(dir.path(), &db.url);
    let second = ServeProcess::start(dir.path(), &db.url);
    let client = client();
    let created = client
        .post(format!("http://{}/api/coupons", first.addr))
        .json(&serde_json::json!({"name": "SHARED", "amount": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let addrs = [first.addr, second.addr];
    let results = race(120, |i| {
        let client = client.clone();
        let user = format!("user_{}", i / 2);
        let addr = addrs[i % 2];
        async move {
            (
                user.clone(),
                claim(&client, addr, &user, "SHARED")
                    .await
                    .status()
                    .as_u16(),
            )
        }
    })
    .await;

    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(u, _)| u)
        .collect();
    assert_eq!(winners.len(), 10, "{results:?}");
    assert_eq!(
        winners.iter().collect::<HashSet<_>>().len(),
        10,
        "a user won twice"
    );
    assert!(
        results.iter().all(|(_, s)| *s == 200 || *s == 409),
        "{results:?}"
    );
    for addr in addrs {
        let (_, coupon) = status_and_json(get_coupon(&client, addr, "SHARED").await).await;
        assert_eq!(coupon["remaining_amount"], 0);
        assert_invariant(&coupon);
    }
}

async fn sigterm_stops_the_server_cleanly(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path(), &db.url);
    let health = client()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("SIGTERM received")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("\"stopped\"")), "{log:?}");
}
