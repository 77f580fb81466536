//! Several real `allot serve` processes on one database, and shutdown.

use std::collections::HashSet;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::{
    helpers::{
        Backend, ServeProcess, TestDb, allot_command, assert_invariant, claim, client, get_coupon,
        race, status_and_json,
    },
    on_every_backend,
};

on_every_backend!(
    two_serve_processes_race_for_one_coupon,
    sigterm_stops_the_server_cleanly,
    sigterm_lets_an_in_flight_request_finish,
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

/// A request whose body is still arriving when SIGTERM comes is served, and
/// only then does the process exit 0.
async fn sigterm_lets_an_in_flight_request_finish(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path(), &db.url);

    let body = br#"{"name": "IN_FLIGHT", "amount": 7}"#;
    let (first, rest) = body.split_at(10);
    let mut stream = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    let head = format!(
        "POST /api/coupons HTTP/1.1\r\nhost: allot\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server asks for the body only once the handler reads it: from
    // here on the request is in flight.
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    stream.read_line(&mut line).await.unwrap();
    stream.write_all(first).await.unwrap();

    server.signal("TERM");
    server.wait_for_log("SIGTERM received");
    stream.write_all(rest).await.unwrap();

    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log:?}");

    let shown = allot_command(dir.path())
        .args(["coupons", "show", "IN_FLIGHT", "--json"])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "the in-flight coupon was not stored"
    );
}

/// A risky lease is warned about at start; a provider token never reaches
/// the log, even when the provider rejects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warnings_are_logged_and_secrets_are_not() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "ErrorCode": 10, "Message": "Bad or missing Server API token."
        })))
        .mount(&provider)
        .await;
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let token = "pm-secret-token-7f3a9c";
    let uri = provider.uri();
    let server = ServeProcess::start_with(
        dir.path(),
        &db.url,
        &[
            ("ALLOT_MAIL_TRANSPORT", "postmark"),
            ("ALLOT_POSTMARK_TOKEN", token),
            ("ALLOT_POSTMARK_URL", uri.as_str()),
            ("ALLOT_JOB_LEASE", "5s"),
            ("ALLOT_SEND_TIMEOUT", "10s"),
            ("ALLOT_WORKER_POLL_INTERVAL", "100ms"),
            ("RUST_LOG", "debug"),
        ],
    );
    let out = allot_command(dir.path())
        .args(["mail", "test", "buyer@example.com"])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success());
    server.wait_for_log("job is dead");
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        log.iter()
            .any(|l| l.contains("ALLOT_JOB_LEASE") && l.contains("ALLOT_SEND_TIMEOUT")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("401")),
        "the provider's refusal is logged: {log:?}"
    );
    let leaked: Vec<_> = log.iter().filter(|l| l.contains(token)).collect();
    assert!(leaked.is_empty(), "token in the log: {leaked:?}");
}
