//! Postmark and SendGrid, stood in for by a local HTTP mock server.

use std::time::Duration;

use allot::{
    config::{MailTransport, Secret},
    jobs::WorkerEvent,
};
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_partial_json, header, method, path},
};

use crate::{
    helpers::{Backend, World},
    on_every_backend,
};

on_every_backend!(
    postmark_accepts_the_message_in_its_api_shape,
    sendgrid_accepts_the_message_in_its_api_shape,
    provider_answers_are_sorted_into_retry_and_dead,
);

#[derive(Clone, Copy)]
enum Provider {
    Postmark,
    SendGrid,
}

async fn world(backend: Backend, provider: Provider, server: &MockServer) -> World {
    let base_url = server.uri();
    World::new(backend, move |s| {
        s.mail.from = allot::text::EmailAddress::parse_mailbox("Shop <shop@example.com>").unwrap();
        s.mail.transport = match provider {
            Provider::Postmark => MailTransport::Postmark {
                token: Secret::from("pm-token".to_string()),
                base_url,
            },
            Provider::SendGrid => MailTransport::SendGrid {
                api_key: Secret::from("sg-key".to_string()),
                base_url,
            },
        };
    })
    .await
}

async fn postmark_accepts_the_message_in_its_api_shape(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .and(header("X-Postmark-Server-Token", "pm-token"))
        .and(body_partial_json(json!({
            "From": "Shop <shop@example.com>",
            "To": "buyer@example.com",
            "Subject": "allot test message",
            "MessageStream": "outbound",
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"ErrorCode": 0, "Message": "OK"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let world = world(backend, Provider::Postmark, &server).await;
    let id = world
        .queue_email("buyer@example.com", "test", json!({"address": "x"}))
        .await;
    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events, vec![WorkerEvent::Done { job_id: id }]);
    let request = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = request.body_json().unwrap();
    assert!(body["TextBody"].as_str().unwrap().contains("test message"));
    assert!(body["HtmlBody"].as_str().unwrap().contains("<table"));
    assert!(
        body["Headers"][0]["Value"]
            .as_str()
            .unwrap()
            .starts_with(&format!("<allot.job-{id}."))
    );
}

async fn sendgrid_accepts_the_message_in_its_api_shape(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("Authorization", "Bearer sg-key"))
        .and(body_partial_json(json!({
            "personalizations": [{"to": [{"email": "buyer@example.com"}]}],
            "from": {"email": "shop@example.com", "name": "Shop"},
            "subject": "allot test message",
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let world = world(backend, Provider::SendGrid, &server).await;
    let id = world
        .queue_email("buyer@example.com", "test", json!({"address": "x"}))
        .await;
    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events, vec![WorkerEvent::Done { job_id: id }]);
    let body: serde_json::Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(body["content"][0]["type"], "text/plain");
    assert_eq!(body["content"][1]["type"], "text/html");
}

/// 401 and 422 will not change by themselves: dead at once. 429 waits at
/// least its Retry-After; 500 follows the schedule.
async fn provider_answers_are_sorted_into_retry_and_dead(backend: Backend) {
    for provider in [Provider::Postmark, Provider::SendGrid] {
        let cases = [
            (
                ResponseTemplate::new(401)
                    .set_body_json(json!({"ErrorCode": 10, "Message": "Bad token"})),
                "dead",
                None,
            ),
            (
                ResponseTemplate::new(422)
                    .set_body_json(json!({"ErrorCode": 300, "Message": "Invalid 'To'"})),
                "dead",
                None,
            ),
            (
                ResponseTemplate::new(429).insert_header("Retry-After", "120"),
                "retry",
                Some(Duration::from_secs(120)),
            ),
            (ResponseTemplate::new(500), "retry", None),
        ];
        for (response, expected, min_delay) in cases {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(response)
                .expect(1)
                .mount(&server)
                .await;
            let world = world(backend, provider, &server).await;
            let id = world
                .queue_email("buyer@example.com", "test", json!({"address": "x"}))
                .await;
            let now = allot::clock::now_ms();
            let events = world.worker().run_once(now).await.unwrap();
            let job = world.job(id).await;
            let error = job.last_error.clone().unwrap_or_default();
            match (expected, &events[..]) {
                ("dead", [WorkerEvent::Dead { .. }]) => assert_eq!(job.state.as_str(), "dead"),
                ("retry", [WorkerEvent::Retry { at, .. }]) => {
                    assert_eq!(job.state.as_str(), "queued");
                    if let Some(min) = min_delay {
                        assert!(
                            at - now >= min.as_millis() as i64,
                            "Retry-After ignored: {}",
                            at - now
                        );
                    }
                }
                _ => panic!("{expected}: {events:?} ({error})"),
            }
            assert!(
                error.contains("answered"),
                "the provider's answer is kept: {error}"
            );
        }
    }
}
