//! Requests the tests send, and a starting gate for races.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::Barrier;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

pub async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> reqwest::Response {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

pub async fn claim(
    client: &reqwest::Client,
    addr: SocketAddr,
    user_id: &str,
    coupon: &str,
) -> reqwest::Response {
    post_json(
        client,
        &format!("http://{addr}/api/coupons/claim"),
        json!({"user_id": user_id, "coupon_name": coupon}),
    )
    .await
}

pub async fn get_coupon(
    client: &reqwest::Client,
    addr: SocketAddr,
    name: &str,
) -> reqwest::Response {
    let name = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
    // form encoding writes spaces as '+'; a path needs %20.
    let name = name.replace('+', "%20");
    client
        .get(format!("http://{addr}/api/coupons/{name}"))
        .send()
        .await
        .expect("request sent")
}

/// Status and parsed JSON body of a response.
pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

/// Runs `n` tasks that all wait at one gate and then fire together; returns
/// their results in task order.
pub async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let gate = gate.clone();
            let fut = task(i);
            tokio::spawn(async move {
                gate.wait().await;
                fut.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("race task"));
    }
    results
}

/// `remaining_amount + len(claimed_by) == amount`, and nobody appears twice.
pub fn assert_invariant(coupon: &Value) {
    let amount = coupon["amount"].as_i64().expect("amount");
    let remaining = coupon["remaining_amount"]
        .as_i64()
        .expect("remaining_amount");
    let claimed: Vec<&str> = coupon["claimed_by"]
        .as_array()
        .expect("claimed_by")
        .iter()
        .map(|v| v.as_str().expect("user id"))
        .collect();
    assert_eq!(
        remaining + claimed.len() as i64,
        amount,
        "invariant broken: {coupon}"
    );
    let unique: std::collections::HashSet<_> = claimed.iter().collect();
    assert_eq!(
        unique.len(),
        claimed.len(),
        "a user holds two units: {coupon}"
    );
}
