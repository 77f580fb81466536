//! Concurrency: many buyers pressing "claim" in the same instant.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::{
    helpers::{Backend, TestApp, assert_invariant, claim, get_coupon, race, status_and_json},
    on_every_backend,
};

on_every_backend!(
    fifty_users_race_for_five_coupons,
    one_user_sends_ten_claims_at_once,
    hundreds_of_claims_with_repeated_users_on_small_stocks,
    readers_during_a_race_always_see_a_consistent_coupon,
);

/// (status, error code or "claimed") per request.
async fn outcome(response: reqwest::Response) -> (u16, String) {
    let (status, body) = status_and_json(response).await;
    let what = body["error"]
        .as_str()
        .or(body["status"].as_str())
        .unwrap_or("?");
    (status, what.to_string())
}

async fn fifty_users_race_for_five_coupons(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("FLASH", 5).await;
    let (client, addr) = (app.client.clone(), app.addr);
    let results = race(50, |i| {
        let client = client.clone();
        async move { outcome(claim(&client, addr, &format!("user_{i}"), "FLASH").await).await }
    })
    .await;

    let winners: HashSet<String> = results
        .iter()
        .enumerate()
        .filter(|(_, (status, _))| *status == 200)
        .map(|(i, _)| format!("user_{i}"))
        .collect();
    assert_eq!(winners.len(), 5, "{results:?}");
    let losers = results
        .iter()
        .filter(|r| **r == (409, "out_of_stock".into()))
        .count();
    assert_eq!(losers, 45, "{results:?}");

    let (_, coupon) = status_and_json(app.coupon("FLASH").await).await;
    assert_eq!(coupon["remaining_amount"], 0);
    let claimed: HashSet<String> = claimed_by(&coupon).into_iter().collect();
    assert_eq!(claimed, winners);
    assert_invariant(&coupon);
}

async fn one_user_sends_ten_claims_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("ONE_PER_USER", 100).await;
    let (client, addr) = (app.client.clone(), app.addr);
    let results = race(10, |_| {
        let client = client.clone();
        async move { outcome(claim(&client, addr, "greedy", "ONE_PER_USER").await).await }
    })
    .await;

    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    let rejected = results
        .iter()
        .filter(|r| **r == (409, "already_claimed".into()))
        .count();
    assert_eq!(rejected, 9, "{results:?}");

    let (_, coupon) = status_and_json(app.coupon("ONE_PER_USER").await).await;
    assert_eq!(coupon["remaining_amount"], 99);
    assert_eq!(claimed_by(&coupon), vec!["greedy"]);
    assert_invariant(&coupon);
}

/// 400 claims at once: 100 users, each trying 4 times, on two coupons with
/// 20 and 3 units.
async fn hundreds_of_claims_with_repeated_users_on_small_stocks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("BIG", 20).await;
    app.create_coupon("SMALL", 3).await;
    let (client, addr) = (app.client.clone(), app.addr);
    let results = race(400, |i| {
        let client = client.clone();
        let user = format!("user_{}", i % 100);
        let coupon = if i % 2 == 0 { "BIG" } else { "SMALL" };
        async move {
            let result = outcome(claim(&client, addr, &user, coupon).await).await;
            (coupon, user, result)
        }
    })
    .await;

    for (coupon, stock) in [("BIG", 20), ("SMALL", 3)] {
        let mut by_user: HashMap<&str, Vec<&str>> = HashMap::new();
        for (c, user, (_, what)) in &results {
            if *c == coupon {
                by_user.entry(user).or_default().push(what);
            }
        }
        let winners: HashSet<&str> = by_user
            .iter()
            .filter(|(_, outcomes)| outcomes.contains(&"claimed"))
            .map(|(user, _)| *user)
            .collect();
        assert_eq!(winners.len(), stock, "{coupon}");
        for (user, outcomes) in &by_user {
            let granted = outcomes.iter().filter(|o| **o == "claimed").count();
            if winners.contains(user) {
                // A winner's other attempts see their claim before the stock.
                assert_eq!(granted, 1, "{coupon} {user}: {outcomes:?}");
                assert!(
                    outcomes
                        .iter()
                        .all(|o| *o == "claimed" || *o == "already_claimed"),
                    "{coupon} {user}: {outcomes:?}"
                );
            } else {
                assert!(
                    outcomes.iter().all(|o| *o == "out_of_stock"),
                    "{coupon} {user}: {outcomes:?}"
                );
            }
        }
        let (_, body) = status_and_json(app.coupon(coupon).await).await;
        assert_eq!(body["remaining_amount"], 0);
        let claimed: HashSet<String> = claimed_by(&body).into_iter().collect();
        let winners: HashSet<String> = winners.into_iter().map(String::from).collect();
        assert_eq!(claimed, winners, "{coupon}");
        assert_invariant(&body);
    }
}

async fn readers_during_a_race_always_see_a_consistent_coupon(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("WATCHED", 30).await;
    let (client, addr) = (app.client.clone(), app.addr);
    let results = race(120, |i| {
        let client = client.clone();
        async move {
            if i % 2 == 0 {
                claim(&client, addr, &format!("user_{i}"), "WATCHED").await;
                None
            } else {
                let (_, coupon) = status_and_json(get_coupon(&client, addr, "WATCHED").await).await;
                Some(coupon)
            }
        }
    })
    .await;
    for coupon in results.iter().flatten() {
        assert_invariant(coupon);
    }
    let (_, coupon) = status_and_json(app.coupon("WATCHED").await).await;
    assert_eq!(coupon["remaining_amount"], 0);
    assert_invariant(&coupon);
}

fn claimed_by(coupon: &Value) -> Vec<String> {
    coupon["claimed_by"]
        .as_array()
        .expect("claimed_by")
        .iter()
        .map(|v| v.as_str().expect("user id").to_string())
        .collect()
}
