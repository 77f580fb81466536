//! Clients that hold connections instead of using them: headers or a body
//! trickled a byte at a time (slowloris), idle keep-alive connections, and
//! thousands of connections at once. The server cuts the slow ones off
//! after `ALLOT_READ_TIMEOUT`, stores nothing half-sent, and keeps serving
//! everyone else.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    helpers::{Backend, TOKEN, TestApp, seed_keys},
    on_every_backend,
};

on_every_backend!(
    headers_sent_a_byte_at_a_time_are_cut_off,
    a_body_sent_a_byte_at_a_time_is_408_and_nothing_is_stored,
    idle_keep_alive_connections_are_closed,
    thousands_of_open_connections_do_not_keep_orders_out,
);

const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Far longer than the read timeout: a server that waits for a slow client
/// this long would wait for ever.
const PATIENCE: Duration = Duration::from_secs(15);

async fn shop_with_read_timeout(backend: Backend) -> TestApp {
    TestApp::shop(backend, |settings| settings.read_timeout = READ_TIMEOUT).await
}

/// Writes `rest` a byte every 100 ms until the server closes the connection
/// or answers; what it answered (empty when it just closed), and how long
/// the server let the client trickle.
async fn trickle(stream: &mut TcpStream, rest: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in rest.iter().cycle() {
        assert!(
            started.elapsed() < PATIENCE,
            "the server still reads a client that sends a byte every 100 ms"
        );
        if stream.write_all(&[*byte]).await.is_err() {
            break; // closed by the server
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                // Read the rest of the answer until the server closes.
                let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
                break;
            }
            Err(_) => {} // nothing yet: send the next byte
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

async fn headers_sent_a_byte_at_a_time_are_cut_off(backend: Backend) {
    let app = shop_with_read_timeout(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: allot\r\n")
        .await
        .unwrap();
    let (answer, held) = trickle(&mut stream, b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(held >= READ_TIMEOUT, "cut off after {held:?}");
    // Everyone else is still served.
    let healthy = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
}

async fn a_body_sent_a_byte_at_a_time_is_408_and_nothing_is_stored(backend: Backend) {
    let app = shop_with_read_timeout(backend).await;
    seed_keys(&app.connect().await, "course-101", &["SLOW-KEY-1".into()]).await;
    let body = json!({"order_id": "SLOW-1", "email": "slow@example.com"}).to_string();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/webhooks/generic?token={TOKEN}&sku=course-101 HTTP/1.1\r\n\
         Host: allot\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len() + 1_000
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..5]).await.unwrap();
    let (answer, held) = trickle(&mut stream, b" ").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(held >= READ_TIMEOUT, "cut off after {held:?}");

    let (status, _) = app.order("generic", "SLOW-1").await;
    assert_eq!(status, 404, "half a body stores nothing");
    // The same order sent at a normal pace is taken.
    let (status, answer) = app.webhook("generic?sku=course-101", body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("fulfilled"))
    );
}

async fn idle_keep_alive_connections_are_closed(backend: Backend) {
    let app = shop_with_read_timeout(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: allot\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Then nothing: the server hangs up by itself.
    let started = Instant::now();
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 on the way out
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle connection was kept for {PATIENCE:?}"
    );
    assert!(started.elapsed() >= READ_TIMEOUT / 2);
}

const CONNECTIONS: usize = 2_000;
const ORDERS: usize = 40;

async fn thousands_of_open_connections_do_not_keep_orders_out(backend: Backend) {
    // The default read timeout (30 s), so that the crowd stays for the test.
    let app = TestApp::shop(backend, |_| {}).await;
    let keys: Vec<String> = (0..ORDERS).map(|i| format!("CROWD-KEY-{i:03}")).collect();
    let db = app.connect().await;
    seed_keys(&db, "course-101", &keys).await;

    // A crowd: idle connections, and connections stuck half-way through
    // their headers or bodies.
    let mut crowd = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(app.addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e} (raise `ulimit -n`)"));
        let partial: &[u8] = match i % 3 {
            0 => b"",
            1 => b"GET /healthz HTTP/1.1\r\nHost: al",
            _ => b"POST /api/coupons HTTP/1.1\r\nHost: allot\r\nContent-Length: 100\r\n\r\n{\"na",
        };
        stream.write_all(partial).await.unwrap();
        crowd.push(stream);
    }

    // Meanwhile the shop's orders and a health check go through.
    let mut orders = tokio::task::JoinSet::new();
    for n in 0..ORDERS {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!(
                "/v1/webhooks/generic?token={TOKEN}&sku=course-101"
            )),
        );
        orders.spawn(async move {
            let body = json!({"order_id": format!("C-{n}"), "email": format!("c{n}@example.com")});
            let response = client.post(url).json(&body).send().await.unwrap();
            response.status().as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = orders.join_next().await {
        statuses.push(status.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let healthy = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    for n in 0..ORDERS {
        let (status, order) = app.order("generic", &format!("C-{n}")).await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["state"], "fulfilled", "{order}");
    }
    drop(crowd);
}
