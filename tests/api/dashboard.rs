//! `/admin` as an operator uses it over HTTP: logging in (the cookie's
//! attributes, a wrong token, a forged cookie), the overview's stock
//! highlights, the jobs pages a page at a time, and fixing a dead letter:
//! retried and delivered, discarded; a form without the session's CSRF
//! token changes nothing; orders found by email, order id and state, and
//! the body of one that needs attention; a key file imported (larger than
//! any request body) serving the orders that waited, and a key revoked; a
//! process stopped and started through the control channel; a merchant
//! endpoint disabled and enabled. (The browser tests drive the same pages in
//! Chromium.)

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::{
    helpers::{ADMIN, Backend, TestApp, count, execute, seed_keys},
    on_every_backend,
};

on_every_backend!(
    only_the_admin_token_opens_the_dashboard,
    the_overview_highlights_sold_out_and_low_stock,
    jobs_are_listed_a_page_at_a_time,
    a_dead_letter_is_retried_and_delivered_and_another_discarded,
    orders_are_found_by_email_order_id_and_state,
    an_order_set_aside_is_taken_in_again_once_its_cause_is_fixed,
    keys_imported_on_the_dashboard_serve_waiting_orders_and_a_key_is_revoked,
    a_process_is_stopped_and_started_from_the_dashboard,
    a_merchant_endpoint_is_disabled_and_enabled_again,
);

/// A browser without a cookie jar of its own: keeps the session cookie
/// and follows no redirect, so each answer is seen as sent.
struct Operator<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a form with a CSRF token");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl<'a> Operator<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            client,
            cookie: None,
        }
    }

    async fn logged_in(app: &'a TestApp) -> Self {
        let mut operator = Self::new(app);
        let answer = operator.post("/admin/login", &[("token", ADMIN)]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        operator
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header(header::COOKIE, cookie),
            None => request,
        };
        let response = request.send().await.expect("sent");
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(set) = headers.get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
            self.cookie = Some(pair).filter(|p| !p.ends_with('='));
        }
        let body = response.text().await.expect("a body");
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(self.app.url(path));
        self.send(request).await
    }

    /// A `multipart/form-data` post, as a browser sends a form with a file.
    async fn upload(&mut self, path: &str, fields: &[(&str, &str)], file: &[u8]) -> Page {
        let boundary = "allot-test-boundary-7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
        }
        body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"keys.txt\"\r\ncontent-type: text/plain\r\n\r\n").bytes());
        body.extend_from_slice(file);
        body.extend(format!("\r\n--{boundary}--\r\n").bytes());
        let request = self
            .client
            .post(self.app.url(path))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self
            .client
            .post(self.app.url(path))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(request).await
    }
}

async fn only_the_admin_token_opens_the_dashboard(backend: Backend) {
    let off = TestApp::shop(backend, |_| {}).await;
    let page = Operator::new(&off).get("/admin").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("ALLOT_ADMIN_TOKEN"), "{}", page.body);

    let app = TestApp::admin_shop(backend).await;
    let mut stranger = Operator::new(&app);
    let page = stranger.get("/admin").await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    let form = stranger.get("/admin/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body.contains(r#"<label for="token">"#),
        "{}",
        form.body
    );

    let wrong = stranger.post("/admin/login", &[("token", "guess")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    assert!(wrong.body.contains("not the admin token"), "{}", wrong.body);
    let garbled = stranger
        .send(app.client.post(app.url("/admin/login")).body("%%%"))
        .await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST, "{}", garbled.body);

    let mut operator = Operator::new(&app);
    let login = operator.post("/admin/login", &[("token", ADMIN)]).await;
    assert_eq!(
        (login.status, login.location()),
        (StatusCode::SEE_OTHER, "/admin")
    );
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(
        !cookie.contains(ADMIN),
        "the token is in the cookie: {cookie}"
    );

    let overview = operator.get("/admin").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert!(
        overview.body.contains("<h1>Overview</h1>"),
        "{}",
        overview.body
    );
    assert!(!overview.body.contains(ADMIN), "the token is on the page");
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(overview.headers[name], value);
    }
    let policy = overview.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let css = operator.get("/admin/assets/allot.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");

    // A cookie that was tampered with is no session.
    let mut forger = Operator::new(&app);
    let real = operator.cookie.clone().unwrap();
    let (name_and_expiry, rest) = real.split_once('.').unwrap();
    forger.cookie = Some(format!("{}9.{rest}", name_and_expiry));
    assert_eq!(forger.get("/admin").await.status, StatusCode::SEE_OTHER);

    // Logging out needs the session's own form.
    let refused = operator.post("/admin/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(operator.get("/admin").await.status, StatusCode::OK);
    let csrf = overview.csrf();
    let out = operator.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(operator.get("/admin").await.status, StatusCode::SEE_OTHER);
}

async fn the_overview_highlights_sold_out_and_low_stock(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    let keys = |sku: &str, n: usize| {
        (0..n)
            .map(|i| format!("{sku}-KEY-{i:04}"))
            .collect::<Vec<_>>()
    };
    seed_keys(&db, "gone-sku", &keys("gone-sku", 1)).await;
    seed_keys(&db, "few-sku", &keys("few-sku", 3)).await;
    seed_keys(&db, "many-sku", &keys("many-sku", 40)).await;
    let body = json!({"order_id": "o-1", "email": "buyer@example.com", "sku": "gone-sku"});
    let (status, answer) = app.webhook("generic", body.to_string()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("fulfilled"))
    );
    app.create_coupon("EMPTY_SOON", 1).await;
    app.claim("user-1", "EMPTY_SOON").await;

    let mut operator = Operator::logged_in(&app).await;
    let page = operator.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let row = |sku: &str| {
        let at = page
            .body
            .find(&format!("<th scope=\"row\">{sku}</th>"))
            .expect(sku);
        let start = page.body[..at].rfind("<tr").unwrap();
        page.body[start..at].to_string()
    };
    assert!(row("gone-sku").contains("level-sold_out"), "{}", page.body);
    assert!(row("few-sku").contains("level-low"), "{}", page.body);
    assert!(row("many-sku").contains("level-ok"), "{}", page.body);
    assert!(
        row("EMPTY_SOON").contains("level-sold_out"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("gone-sku-KEY-0000"),
        "a license key is on the page"
    );
    assert!(page.body.contains("Deliveries per minute"), "{}", page.body);
}

async fn jobs_are_listed_a_page_at_a_time(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    // Not due for a day, so the app's worker leaves them queued.
    let tomorrow = allot::clock::now_ms() + 86_400_000;
    let mut ids = Vec::new();
    for _ in 0..120 {
        let mut job = allot::jobs::NewJob::new("later", json!({}), 3);
        job.run_at = tomorrow;
        ids.push(allot::jobs::enqueue_now(&db, &job).await.unwrap().unwrap());
    }
    let mut operator = Operator::logged_in(&app).await;
    let mut seen = Vec::new();
    let mut path = "/admin/jobs?state=queued&kind=later".to_string();
    for expected in [50, 50, 20] {
        let page = operator.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let on_page: Vec<i64> = page
            .body
            .match_indices("<a href=\"/admin/jobs/")
            .filter_map(|(at, _)| {
                let rest = &page.body[at + "<a href=\"/admin/jobs/".len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect();
        assert_eq!(on_page.len(), expected, "{}", page.body);
        seen.extend(on_page);
        match page.body.find("before=") {
            Some(at) => {
                let rest = &page.body[at + "before=".len()..];
                let before = &rest[..rest.find('"').unwrap()];
                path = format!("/admin/jobs?state=queued&kind=later&before={before}");
            }
            None => assert_eq!(expected, 20, "the last page links to no older one"),
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each job once");
    let unknown = operator.get("/admin/jobs?state=sleeping").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let missing = operator.get("/admin/jobs/99999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let not_a_number = operator.get("/admin/jobs/abc").await;
    assert_eq!(not_a_number.status, StatusCode::NOT_FOUND);
}

async fn a_dead_letter_is_retried_and_delivered_and_another_discarded(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    // An email that died (as if its mail server had refused it for good),
    // and a job no worker knows, which dies at its first attempt.
    let mut mail = allot::notices::email_job(
        "buyer@example.com",
        "test",
        json!({"address": "buyer@example.com"}),
        3,
    );
    mail.run_at = allot::clock::now_ms() + 86_400_000;
    let mail = allot::jobs::enqueue_now(&db, &mail).await.unwrap().unwrap();
    execute(
        &db,
        &format!("update jobs set state = 'dead', attempts = 3, last_error = '550 mailbox unavailable' where id = {mail}"),
    )
    .await;
    let unknown = allot::jobs::NewJob::new("no-such-kind", json!({}), 3);
    let unknown = allot::jobs::enqueue_now(&db, &unknown)
        .await
        .unwrap()
        .unwrap();
    crate::helpers::eventually("the unknown job dies", async || {
        count(
            &db,
            &format!("select count(*) from jobs where id = {unknown} and state = 'dead'"),
        )
        .await
            == 1
    })
    .await;

    let mut operator = Operator::logged_in(&app).await;
    let dead = operator.get("/admin/jobs?state=dead").await;
    assert!(
        dead.body.contains("550 mailbox unavailable"),
        "{}",
        dead.body
    );
    assert!(dead.body.contains("Retry all 2 dead jobs"), "{}", dead.body);
    let detail = operator.get(&format!("/admin/jobs/{unknown}")).await;
    assert!(
        detail.body.contains("no worker knows job kind"),
        "the attempt log says why: {}",
        detail.body
    );

    // Asked first; a post without the session's token changes nothing.
    let ask = operator.get(&format!("/admin/jobs/{mail}/retry")).await;
    assert!(ask.body.contains("Are you sure?"), "{}", ask.body);
    let forged = operator
        .post(
            &format!("/admin/jobs/{mail}/retry"),
            &[("csrf", "not-the-token")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let missing = operator
        .post(&format!("/admin/jobs/{mail}/retry"), &[])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let state = |id: i64| format!("select count(*) from jobs where id = {id} and state = 'dead'");
    assert_eq!(count(&db, &state(mail)).await, 1, "still dead");

    let csrf = ask.csrf();
    let retried = operator
        .post(&format!("/admin/jobs/{mail}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    assert_eq!(
        retried.location(),
        format!("/admin/jobs/{mail}?notice=retried")
    );
    let mails = app
        .wait_for_mails(1, |m| m.contains("buyer@example.com"))
        .await;
    assert_eq!(mails.len(), 1);
    crate::helpers::eventually("the retried job is done", async || {
        count(
            &db,
            &format!("select count(*) from jobs where id = {mail} and state = 'done'"),
        )
        .await
            == 1
    })
    .await;

    let ask = operator
        .get(&format!("/admin/jobs/{unknown}/discard"))
        .await;
    let discarded = operator
        .post(
            &format!("/admin/jobs/{unknown}/discard"),
            &[("csrf", &ask.csrf())],
        )
        .await;
    assert_eq!(
        discarded.status,
        StatusCode::SEE_OTHER,
        "{}",
        discarded.body
    );
    assert_eq!(
        count(
            &db,
            &format!("select count(*) from jobs where id = {unknown}")
        )
        .await,
        0
    );
    let gone = operator.get(&format!("/admin/jobs/{unknown}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

async fn orders_are_found_by_email_order_id_and_state(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["SECRET-KEY-1".to_string()]).await;
    for (order, email) in [("A-1", "ann@example.com"), ("B-2", "bob@example.com")] {
        let body = json!({"order_id": order, "email": email, "sku": "course-101"});
        app.webhook("generic", body.to_string()).await;
    }
    let (status, answer) = app.webhook("generic", "<not json>").await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("needs_attention"))
    );

    let mut operator = Operator::logged_in(&app).await;
    let all = operator.get("/admin/orders").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert!(
        all.body.contains("A-1") && all.body.contains("B-2"),
        "{}",
        all.body
    );
    let by_email = operator.get("/admin/orders?q=bob%40example.com").await;
    assert!(
        by_email.body.contains("B-2") && !by_email.body.contains(">A-1<"),
        "{}",
        by_email.body
    );
    let by_id = operator.get("/admin/orders?q=A-1").await;
    assert!(
        by_id.body.contains("ann@example.com") && !by_id.body.contains("bob@"),
        "{}",
        by_id.body
    );
    let waiting = operator.get("/admin/orders?state=awaiting_stock").await;
    assert!(
        waiting.body.contains("B-2") && !waiting.body.contains(">A-1<"),
        "{}",
        waiting.body
    );
    let stuck = operator.get("/admin/orders?state=needs_attention").await;
    let link = stuck
        .body
        .split("href=\"")
        .find(|part| part.starts_with("/admin/orders/generic/"))
        .map(|part| part[..part.find('"').unwrap()].to_string())
        .expect("a link to the order that needs attention");
    let order = operator.get(&link.replace("&amp;", "&")).await;
    assert_eq!(order.status, StatusCode::OK, "{}", order.body);
    assert!(order.body.contains("Body as received"), "{}", order.body);
    assert!(
        order.body.contains("&lt;not json&gt;"),
        "the body, escaped: {}",
        order.body
    );

    let fulfilled = operator.get("/admin/orders/generic/A-1").await;
    assert!(fulfilled.body.contains("fulfilled"), "{}", fulfilled.body);
    assert!(
        !fulfilled.body.contains("SECRET-KEY-1"),
        "a license key is on the page"
    );
    assert_eq!(
        operator.get("/admin/orders/nowhere/A-1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        operator.get("/admin/orders/generic/Z-9").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        operator.get("/admin/orders?state=lost").await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn an_order_set_aside_is_taken_in_again_once_its_cause_is_fixed(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["SECRET-KEY-7".to_string()]).await;
    // An order naming no SKU, with an id that needs encoding in a URL.
    let order_id = "N-1 #7/b";
    let body = json!({"order_id": order_id, "email": "nina@example.com"});
    let (status, answer) = app.webhook("generic", body.to_string()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("needs_attention")),
        "{answer}"
    );
    let (_, unusable) = app.webhook("generic", "<not json>").await;
    let unparsed = unusable["orders"][0]["order_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut operator = Operator::logged_in(&app).await;
    let page = "/admin/orders/generic/N-1%20%237%2Fb";
    let shown = operator.get(page).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let action = "/admin/orders/generic/N-1%20%237%2Fb/retry";
    assert!(
        shown
            .body
            .contains(r#"action="/admin/orders/generic/N-1%20%237%2Fb/retry""#),
        "{}",
        shown.body
    );
    let csrf = shown.csrf();

    // A forged form and a SKU that cannot be one change nothing.
    let forged = operator
        .post(action, &[("csrf", "forged"), ("sku", "course-101")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let bad = operator
        .post(action, &[("csrf", &csrf), ("sku", "course\t101")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let (_, order) = app.order("generic", "N-1%20%237%2Fb").await;
    assert_eq!(order["state"], "needs_attention", "{order}");

    // The cause fixed (the operator names the SKU): fulfilled and emailed.
    let taken = operator
        .post(action, &[("csrf", &csrf), ("sku", "course-101")])
        .await;
    assert_eq!(taken.status, StatusCode::SEE_OTHER, "{}", taken.body);
    assert_eq!(taken.location(), format!("{page}?notice=fulfilled"));
    let after = operator.get(taken.location()).await;
    assert!(
        after.body.contains("Taken in again: fulfilled"),
        "{}",
        after.body
    );
    assert!(!after.body.contains("Retry intake"), "{}", after.body);
    let (_, order) = app.order("generic", "N-1%20%237%2Fb").await;
    assert_eq!(
        (order["state"].as_str(), order["product_sku"].as_str()),
        (Some("fulfilled"), Some("course-101")),
        "{order}"
    );
    let states: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"needs_attention"), "{order}");
    assert_eq!(states.last(), Some(&"fulfilled"), "{order}");
    let mails = app
        .wait_for_mails(1, |m| m.contains("nina@example.com"))
        .await;
    assert!(mails[0].contains("SECRET-KEY-7"));

    // Once is enough: it no longer needs attention.
    let again = operator.post(action, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let nowhere = operator
        .post("/admin/orders/generic/Z-9/retry", &[("csrf", &csrf)])
        .await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);

    // A body that is still unusable is set aside again, and the page says so.
    let retried = operator
        .post(
            &format!("/admin/orders/generic/{unparsed}/retry"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    assert!(
        retried.location().ends_with("?notice=needs_attention"),
        "{}",
        retried.location()
    );
    let still = operator.get(retried.location()).await;
    assert!(
        still.body.contains("still needs attention"),
        "{}",
        still.body
    );
    let to_buyers = app
        .mails()
        .into_iter()
        .filter(|m| !m.contains("admin@shop.test"))
        .count();
    assert_eq!(to_buyers, 1, "a buyer's email for an unusable body");
}

async fn keys_imported_on_the_dashboard_serve_waiting_orders_and_a_key_is_revoked(
    backend: Backend,
) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    let body = json!({"order_id": "W-1", "email": "wait@example.com", "sku": "course-101"});
    let (_, answer) = app.webhook("generic", body.to_string()).await;
    assert_eq!(answer["status"], "awaiting_stock");

    // Without a session the file is not taken.
    let stranger = Operator::new(&app)
        .upload(
            "/admin/keys/import",
            &[("csrf", "x"), ("sku", "course-101")],
            b"K-1\n",
        )
        .await;
    assert_eq!(stranger.status, StatusCode::SEE_OTHER);

    let mut operator = Operator::logged_in(&app).await;
    let page = operator.get("/admin/keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.csrf();
    // Larger than any request body (64 KiB): 4,000 keys and a blank line.
    let mut file: String = (0..4000).map(|i| format!("DASH-KEY-{i:06}\n")).collect();
    file.push('\n');
    let forged = operator
        .upload(
            "/admin/keys/import",
            &[("csrf", "forged"), ("sku", "course-101")],
            file.as_bytes(),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(count(&db, "select count(*) from license_keys").await, 0);

    let imported = operator
        .upload(
            "/admin/keys/import",
            &[("csrf", &csrf), ("sku", "course-101")],
            file.as_bytes(),
        )
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    assert!(
        imported
            .body
            .contains("Imported 4000 key(s) into course-101"),
        "{}",
        imported.body
    );

    assert!(
        imported.body.contains("1 blank line(s)"),
        "{}",
        imported.body
    );
    // Served by the import (or by the restock sweep, should it run first).
    crate::helpers::eventually("the waiting order is fulfilled", async || {
        app.order("generic", "W-1").await.1["state"] == "fulfilled"
    })
    .await;
    assert!(
        !imported.body.contains("DASH-KEY-"),
        "keys are not shown back"
    );

    let no_sku = operator
        .upload(
            "/admin/keys/import",
            &[("csrf", &csrf), ("sku", "")],
            b"K-1\n",
        )
        .await;
    assert_eq!(no_sku.status, StatusCode::BAD_REQUEST, "{}", no_sku.body);

    // Revoking asks first, with the key in the form, not the address.
    let key = "DASH-KEY-003999";
    let ask = operator
        .post("/admin/keys/revoke", &[("csrf", &csrf), ("key", key)])
        .await;
    assert_eq!(ask.status, StatusCode::OK, "{}", ask.body);
    assert!(ask.body.contains("Are you sure?"), "{}", ask.body);
    let revoked = format!(
        "select count(*) from license_keys where license_key = '{key}' and status = 'revoked'"
    );
    assert_eq!(count(&db, &revoked).await, 0, "not before it is confirmed");
    let done = operator
        .post(
            "/admin/keys/revoke",
            &[("csrf", &ask.csrf()), ("key", key), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("The key was revoked"), "{}", done.body);
    assert_eq!(count(&db, &revoked).await, 1);
    let unknown = operator
        .post(
            "/admin/keys/revoke",
            &[
                ("csrf", &csrf),
                ("key", "NO-SUCH-KEY"),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert!(
        unknown.body.contains("No pool holds that key"),
        "{}",
        unknown.body
    );
}

async fn a_process_is_stopped_and_started_from_the_dashboard(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let mut operator = Operator::logged_in(&app).await;
    let page = operator.get("/admin/processes").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The app's own process, as it registered itself.
    let id = page
        .body
        .split("name=\"target\" value=\"")
        .nth(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .expect("a live process with buttons");
    let csrf = page.csrf();
    let send = |command: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("target", id.clone()),
            ("command", command.to_string()),
        ]
    };

    let forged = operator
        .post(
            "/admin/processes/command",
            &[("csrf", "forged"), ("target", &id), ("command", "stop")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let fields = send("stop");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stopped = operator.post("/admin/processes/command", &fields).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);
    assert!(
        stopped.body.contains(&format!("{id}: unready")),
        "{}",
        stopped.body
    );
    assert!(stopped.body.contains("process-unready"), "{}", stopped.body);

    let fields = send("start");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = operator.post("/admin/processes/command", &fields).await;
    assert!(
        started.body.contains(&format!("{id}: ready")),
        "{}",
        started.body
    );

    // Terminating asks first (and is not confirmed here: it would end the app).
    let fields = send("terminate");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ask = operator.post("/admin/processes/command", &fields).await;
    assert!(ask.body.contains("Are you sure?"), "{}", ask.body);
    assert!(
        ask.body.contains(r#"name="confirmed" value="yes""#),
        "{}",
        ask.body
    );
    let bogus = operator
        .post(
            "/admin/processes/command",
            &[("csrf", &csrf), ("target", &id), ("command", "rm -rf")],
        )
        .await;
    assert_eq!(bogus.status, StatusCode::BAD_REQUEST);
    let nobody = operator
        .post(
            "/admin/processes/command",
            &[
                ("csrf", &csrf),
                ("target", "no-such-process"),
                ("command", "stop"),
            ],
        )
        .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND, "{}", nobody.body);
}

async fn a_merchant_endpoint_is_disabled_and_enabled_again(backend: Backend) {
    let app = TestApp::admin_shop(backend).await;
    let db = app.connect().await;
    let new = allot::merchant::NewEndpoint::parse(
        "https://crm.example/hooks",
        Some("order.*"),
        Some("CRM"),
        false,
    )
    .unwrap();
    let (id, secret) = allot::merchant::endpoints::add(&db, &new, allot::clock::now_ms())
        .await
        .unwrap();
    let mut operator = Operator::logged_in(&app).await;
    let page = operator.get("/admin/endpoints").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("crm.example"), "{}", page.body);
    assert!(
        !page.body.contains(&secret),
        "the signing secret is on the page"
    );
    let enabled = format!("select count(*) from endpoints where id = {id} and enabled = 1");

    let path = format!("/admin/endpoints/{id}/enabled");
    let forged = operator
        .post(&path, &[("csrf", "forged"), ("enabled", "no")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(count(&db, &enabled).await, 1);
    let csrf = page.csrf();
    let off = operator
        .post(&path, &[("csrf", &csrf), ("enabled", "no")])
        .await;
    assert_eq!(
        (off.status, off.location()),
        (StatusCode::SEE_OTHER, "/admin/endpoints")
    );
    assert_eq!(count(&db, &enabled).await, 0);
    let page = operator.get("/admin/endpoints").await;
    assert!(
        page.body.contains("disabled on the dashboard"),
        "{}",
        page.body
    );
    operator
        .post(&path, &[("csrf", &csrf), ("enabled", "yes")])
        .await;
    assert_eq!(count(&db, &enabled).await, 1);
    let missing = operator
        .post(
            "/admin/endpoints/999999/enabled",
            &[("csrf", &csrf), ("enabled", "no")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
