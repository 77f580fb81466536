//! What key emails read at send time: the lookups in flight together are
//! one statement, and each still gets the key it asked for.

use std::collections::HashMap;

use allot::keys::IssuedKeys;

use crate::{
    helpers::{Backend, Holder, World, eventually, race, seed_keys},
    on_every_backend,
};

on_every_backend!(raced_key_reads_each_get_the_key_asked_for);

/// (id, key) of every key, by id.
async fn stored(world: &World) -> HashMap<i64, String> {
    let rows: Vec<(i64, String)> = allot::on_db!(&world.db, read, |pool, sql| {
        sqlx::query_as(sql("select id, license_key from license_keys"))
            .fetch_all(pool)
            .await
    })
    .unwrap();
    rows.into_iter().collect()
}

async fn seeded(backend: Backend) -> (World, HashMap<i64, String>) {
    let world = World::new(backend, |_| {}).await;
    let keys: Vec<String> = (0..40).map(|n| format!("READ-{n:02}")).collect();
    seed_keys(&world.db, "course", &keys).await;
    let stored = stored(&world).await;
    assert_eq!(stored.len(), 40);
    (world, stored)
}

/// Every key asked for twice, the second time in the opposite order, and
/// two ids that name no key: answered by id, not by position in a batch.
async fn raced_key_reads_each_get_the_key_asked_for(backend: Backend) {
    let (world, stored) = seeded(backend).await;
    let mut ids: Vec<i64> = stored.keys().copied().collect();
    ids.sort_unstable();
    let asks: Vec<i64> = ids
        .iter()
        .copied()
        .chain(ids.iter().rev().copied())
        .chain([0, i64::MAX])
        .collect();
    let reader = IssuedKeys::new(world.db.clone());
    let answers = race(asks.len(), |i| {
        let (reader, id) = (reader.clone(), asks[i]);
        async move { (id, reader.get(id).await.unwrap()) }
    })
    .await;
    for (id, issued) in answers {
        let got = issued.map(|issued| issued.key.expose().to_string());
        assert_eq!(got.as_ref(), stored.get(&id), "key {id}");
    }
}

/// On PostgreSQL a read can be held up (an outside transaction locks the
/// table): the lookups that arrive meanwhile are read in one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_reads_queued_behind_one_in_flight_are_one_statement() {
    if !Backend::Postgres.available() {
        return;
    }
    let (world, stored) = seeded(Backend::Postgres).await;
    let reader = IssuedKeys::new(world.db.clone());
    let holder = Holder::hold(
        Backend::Postgres,
        &world.settings.database.url,
        "lock table license_keys in access exclusive mode",
    )
    .await;
    let mut ids: Vec<i64> = stored.keys().copied().collect();
    ids.sort_unstable();
    let spawn = |id: i64| {
        let reader = reader.clone();
        tokio::spawn(async move { (id, reader.get(id).await.unwrap()) })
    };
    let first = spawn(ids[0]);
    eventually("the first read to be in flight", async || {
        reader.waiting() == Some(0)
    })
    .await;
    let queued: Vec<_> = ids[1..].iter().map(|&id| spawn(id)).collect();
    eventually("every other read to queue behind it", async || {
        reader.waiting() == Some(ids.len() - 1)
    })
    .await;
    holder.release().await;
    for pending in std::iter::once(first).chain(queued) {
        let (id, issued) = pending.await.unwrap();
        let got = issued.map(|issued| issued.key.expose().to_string());
        assert_eq!(got.as_ref(), stored.get(&id), "key {id}");
    }
    assert_eq!(
        reader.reads(),
        2,
        "one read for the first, one for the rest"
    );
}
