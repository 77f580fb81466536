//! The OpenAPI document: valid OpenAPI 3.1; naming every route of the
//! reference and only what the server serves; describing what the routes
//! really answer (each real answer's status is documented for its route
//! and its body validates against the documented schema); and the API
//! reference at `/docs` served whole from the binary.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN, Backend, TOKEN, TestApp, seed_keys},
    on_every_backend,
};

on_every_backend!(real_answers_match_the_document);

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.unwrap()
}

/// Every `(METHOD, path)` the document names.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::admin_shop(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    // An implementation of the specification that is not ours.
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named openapi_spec_validator") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openapi-spec-validator is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: pip install openapi-spec-validator to check the document");
        return;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");

    // Every operation has a unique id, a tag and a documented answer; every
    // route behind a secret names how to present it.
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(ids.insert(op["operationId"].to_string()), "{method} {path}");
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path}"
        );
        // The coupon API, the operations routes and the sign-in page are
        // open by design.
        let open_tags = [json!(["coupons"]), json!(["operations"])];
        let open_pages = [
            "/admin/",
            "/admin/login",
            "/admin/assets/allot.css",
            "/admin/assets/import.js",
        ];
        if !open_tags.contains(&op["tags"]) && !open_pages.contains(&path.as_str()) {
            assert!(
                op["security"].as_array().is_some_and(|s| !s.is_empty()),
                "{method} {path} names no security scheme"
            );
        }
    }
}

/// The routes of `docs/reference.md`'s table, as `(METHOD, /path/{param})`.
fn reference_routes() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md")).unwrap();
    let mut routes = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split(" | ").next().unwrap_or_default();
        for quoted in cell.split('`').skip(1).step_by(2) {
            let mut words = quoted.split_whitespace();
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
                continue;
            }
            let path = path.split(['?', '[']).next().unwrap();
            routes.insert((method.to_string(), path.to_string()));
        }
    }
    routes
}

#[tokio::test]
async fn every_route_of_the_reference_is_in_the_document() {
    let app = TestApp::admin_shop(Backend::Sqlite).await;
    let documented = operations(&document(&app).await);
    let reference = reference_routes();
    assert!(
        reference.len() >= 20,
        "the table was not read: {reference:?}"
    );
    // A documented `{param}` segment stands for any value the reference
    // spells out (`…/{id}/disable`).
    let covers = |(method, path): &(String, String), (m, p): &(String, String)| {
        let (ours, theirs): (Vec<_>, Vec<_>) = (path.split('/').collect(), p.split('/').collect());
        method == m
            && ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|(o, t)| o == t || o.starts_with('{'))
    };
    let missing: Vec<_> = reference
        .iter()
        .filter(|r| !documented.iter().any(|d| covers(d, r)))
        .collect();
    assert!(
        missing.is_empty(),
        "in the reference, not the document: {missing:?}"
    );
}

/// A concrete path for a documented one: every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{source}", "generic")
        .replace("{order_id}", "no-such-order")
        .replace("{name}", "NO_SUCH_COUPON")
        .replace("{action}", "disable")
        .replace("{id}", "999999")
}

/// Whatever the document names is served: no operation meets the router's
/// own 404 (`no such route`) or 405; each answer carries `X-Request-Id`,
/// as the document says.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::admin_shop(Backend::Sqlite).await;
    let doc = document(&app).await;
    for (method, path) in operations(&doc) {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&concrete(&path)),
            )
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // Every answer carries its request's id, and the document says so
        // for the operation and its answers.
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
        let op = &doc["paths"][&path][method.to_lowercase()];
        let sent = op["parameters"].as_array().is_some_and(|parameters| {
            parameters
                .iter()
                .any(|p| p["name"] == "X-Request-Id" && p["in"] == "header")
        });
        assert!(sent, "{method} {path} does not document X-Request-Id");
        for (code, answer) in op["responses"].as_object().unwrap() {
            assert!(
                answer["headers"]["X-Request-Id"].is_object(),
                "{method} {path} {code} does not document its X-Request-Id"
            );
        }
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is documented but not served"
        );
    }
    // And the reverse check has teeth: an undocumented path meets the
    // fallback this test looks for.
    let response = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(response.text().await.unwrap().contains("no such route"));
}

/// Checks one real answer against the document: its status is documented
/// for the operation, and a JSON body validates against its schema.
struct Contract {
    doc: Value,
    checked: BTreeSet<(String, String, u16)>,
}

impl Contract {
    fn check(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let answer = &op["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
        self.checked
            .insert((method.to_string(), path.to_string(), status));
        let schema = &answer["content"]["application/json"]["schema"];
        if !schema.is_object() {
            assert!(
                body.is_null(),
                "{method} {path} {status}: a body the document has no schema for: {body}"
            );
            return;
        }
        // The schema's `$ref`s point into the document's components.
        let mut rooted = schema.clone();
        rooted["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&rooted)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: bad schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the answer does not match the document: {errors:#?}\n{body:#}"
        );
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    url: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(url));
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One request of the walk below: `(method, the documented path, the path
/// requested, the token sent, the JSON body, the status expected)`.
type Step = (
    Method,
    &'static str,
    String,
    Option<&'static str>,
    Option<Value>,
    u16,
);

async fn real_answers_match_the_document(backend: Backend) {
    use Method as M;
    let app = TestApp::admin_shop(backend).await;
    let mut contract = Contract {
        doc: document(&app).await,
        checked: BTreeSet::new(),
    };
    seed_keys(
        &app.connect().await,
        "course-101",
        &["DOC-KEY-1".to_string()],
    )
    .await;
    let mut walk = async |steps: Vec<Step>| {
        let mut answers = Vec::new();
        for (method, template, url, auth, body, expected) in steps {
            let (status, answer) = call(&app, method.clone(), &url, auth, body).await;
            assert_eq!(status, expected, "{method} {url}: {answer}");
            contract.check(method.as_str(), template, status, &answer);
            answers.push(answer);
        }
        answers
    };
    let hook = |query: &str| format!("/v1/webhooks/{query}");
    let order =
        |id: &str| Some(json!({"order_id": id, "email": "doc@example.com", "sku": "course-101"}));
    let coupon = Some(json!({"name": "DOC_PROMO", "amount": 1}));
    let claim = |user: &str, name: &str| Some(json!({"user_id": user, "coupon_name": name}));
    let new_endpoint = Some(json!({"url": "http://127.0.0.1:9/hooks", "events": ["order.*"]}));
    let ping = Some(json!({"command": "ping", "timeout": "10s"}));
    let nobody = Some(json!({"command": "ping", "target": "nobody"}));
    let (coupons, claims) = ("/api/coupons", "/api/coupons/claim");
    let (commands, endpoints) = ("/v1/admin/commands", "/v1/admin/endpoints");
    let (name, webhook) = ("/api/coupons/{name}", "/v1/webhooks/{source}");
    let shown = "/v1/orders/{source}/{order_id}";
    let (shop, admin) = (Some(TOKEN), Some(ADMIN));
    #[rustfmt::skip]
    let answers = walk(vec![
        // Coupons.
        (M::POST, coupons, coupons.into(), None, coupon.clone(), 201),
        (M::POST, coupons, coupons.into(), None, coupon, 409),
        (M::POST, coupons, coupons.into(), None, Some(json!({"name": "", "amount": 0})), 400),
        (M::POST, claims, claims.into(), None, claim("u1", "DOC_PROMO"), 200),
        (M::POST, claims, claims.into(), None, claim("u1", "DOC_PROMO"), 409),
        (M::POST, claims, claims.into(), None, claim("u2", "DOC_PROMO"), 409),
        (M::POST, claims, claims.into(), None, claim("u1", "NOPE"), 404),
        (M::GET, name, "/api/coupons/DOC_PROMO".into(), None, None, 200),
        (M::GET, name, "/api/coupons/NOPE".into(), None, None, 404),
        (M::GET, claims, claims.into(), None, None, 404),
        // Orders from a shop (one key: the second waits), and as they stand.
        (M::POST, webhook, hook(&format!("generic?token={TOKEN}")), None, order("doc-1"), 200),
        (M::POST, webhook, hook(&format!("generic?token={TOKEN}")), None, order("doc-2"), 200),
        (M::POST, webhook, hook("generic?token=wrong"), None, Some(json!({})), 401),
        (M::POST, webhook, hook(&format!("shopify?token={TOKEN}")), None, Some(json!({})), 404),
        (M::POST, webhook, hook(&format!("generic?token={TOKEN}&sku=%20x")), None, Some(json!({})), 400),
        (M::GET, shown, "/v1/orders/generic/doc-1".into(), shop, None, 200),
        (M::GET, shown, "/v1/orders/generic/none".into(), shop, None, 404),
        // Payments, which this shop has not turned on.
        (M::POST, "/v1/webhooks/stripe", hook("stripe"), None, Some(json!({})), 503),
        (M::POST, "/v1/webhooks/payments", hook("payments"), None, Some(json!({})), 503),
        // Statistics and the control channel.
        (M::GET, "/v1/stats", "/v1/stats".into(), admin, None, 200),
        (M::GET, "/v1/stats", "/v1/stats".into(), Some("wrong"), None, 401),
        (M::GET, "/v1/admin/processes", "/v1/admin/processes".into(), admin, None, 200),
        (M::POST, commands, commands.into(), admin, ping, 200),
        (M::POST, commands, commands.into(), admin, Some(json!({"command": "fly"})), 400),
        (M::POST, commands, commands.into(), admin, nobody, 404),
        (M::GET, commands, format!("{commands}?limit=5"), admin, None, 200),
        (M::GET, commands, format!("{commands}?limit=0"), admin, None, 400),
        (M::GET, "/v1/admin/commands/{id}", format!("{commands}/999999"), admin, None, 404),
        // Merchant endpoints: one added.
        (M::POST, endpoints, endpoints.into(), admin, new_endpoint, 201),
        (M::POST, endpoints, endpoints.into(), admin, Some(json!({"url": "not a url"})), 400),
        (M::GET, endpoints, endpoints.into(), admin, None, 200),
        (M::GET, "/v1/admin/endpoints/{id}", format!("{endpoints}/999999"), admin, None, 404),
        // Operations.
        (M::GET, "/healthz", "/healthz".into(), None, None, 200),
        (M::GET, "/readyz", "/readyz".into(), None, None, 200),
    ])
    .await;
    assert_eq!(answers[10]["status"], "fulfilled", "{}", answers[10]);
    assert_eq!(answers[11]["status"], "awaiting_stock", "{}", answers[11]);
    assert_eq!(answers[22]["replies"][0]["status"], "ok", "{}", answers[22]);

    // What the answers above name: the command sent, the endpoint added.
    let command = format!("{commands}/{}", answers[22]["command_id"]);
    let one = format!(
        "{endpoints}/{}",
        answers[28]["endpoint"]["id"].as_i64().unwrap()
    );
    let (act, with_id) = (
        "/v1/admin/endpoints/{id}/{action}",
        "/v1/admin/endpoints/{id}",
    );
    #[rustfmt::skip]
    let mut steps: Vec<Step> = vec![
        (M::GET, "/v1/admin/commands/{id}", command, admin, None, 200),
        (M::GET, with_id, one.clone(), admin, None, 200),
        (M::GET, "/v1/admin/endpoints/{id}/secret", format!("{one}/secret"), admin, None, 200),
    ];
    for action in ["disable", "enable", "rotate-secret", "redrive"] {
        steps.push((M::POST, act, format!("{one}/{action}"), admin, None, 200));
    }
    steps.push((M::POST, act, format!("{one}/fly"), admin, None, 404));
    steps.push((M::DELETE, with_id, one, admin, None, 204));
    walk(steps).await;

    // WooCommerce's setup ping is a form, not JSON.
    let response = app
        .client
        .post(app.url(&format!("/v1/webhooks/woocommerce?token={TOKEN}")))
        .body("webhook_id=7")
        .send()
        .await
        .unwrap();
    let (status, ping) = (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    );
    contract.check("POST", webhook, status, &ping);
    assert_eq!((status, ping), (200, json!({"status": "ping"})));

    assert_eq!(contract.checked.len(), 38, "{:?}", contract.checked);
}

/// Every `.rs` file under `src/`, with its text.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let mut paths = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut sources = Vec::new();
    while let Some(path) = paths.pop() {
        if path.is_dir() {
            paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            sources.push((path, text));
        }
    }
    sources
}

/// The document keys schemas by name, and a second type of the same name
/// silently replaces the first: every `ToSchema` type in the source has a
/// name of its own (its `#[schema(as = …)]`, or its type name).
#[test]
fn every_schema_has_a_name_of_its_own() {
    let mut names: Vec<(String, String)> = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if !(line.trim_start().starts_with("#[derive(") && line.contains("ToSchema")) {
                continue;
            }
            let mut alias = None;
            for next in &lines[at + 1..] {
                let next = next.trim_start();
                if let Some(rest) = next.strip_prefix("#[schema(as = ") {
                    alias = Some(rest.trim_end_matches(")]").to_string());
                }
                let item = next
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                if let Some(rest) = item.strip_prefix("struct ").or(item.strip_prefix("enum ")) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    names.push((alias.unwrap_or(name), path.display().to_string()));
                    break;
                }
            }
        }
    }
    assert!(names.len() > 30, "{names:?}");
    names.sort();
    for pair in names.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "two schemas named alike: {pair:?}");
    }
}

/// A status listed twice for one operation is silently merged into one
/// entry, losing a description: every `#[utoipa::path]` lists each status
/// once.
#[test]
fn no_operation_lists_a_status_twice() {
    let mut operations = 0;
    for (path, text) in sources() {
        for block in text.split("#[utoipa::path(").skip(1) {
            let block = block.split(")]\n").next().unwrap();
            let statuses: Vec<&str> = block
                .split("status = ")
                .skip(1)
                .map(|rest| rest.split([',', ')']).next().unwrap())
                .collect();
            let unique: BTreeSet<&&str> = statuses.iter().collect();
            assert_eq!(unique.len(), statuses.len(), "{}: {block}", path.display());
            operations += 1;
        }
    }
    assert!(operations > 40, "{operations}");
}

#[tokio::test]
async fn the_api_reference_is_served_from_the_binary() {
    let app = TestApp::admin_shop(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/docs/");
    let page = client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    // Everything the page loads comes from this server: no absolute URL.
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            assets.push(piece.split('"').next().unwrap().to_string());
        }
    }
    assert!(
        assets.iter().any(|a| a.ends_with("swagger-ui-bundle.js")),
        "{assets:?}"
    );
    for asset in &assets {
        assert!(!asset.contains("//"), "{asset} is loaded from another host");
        let url = app.url(&format!("/docs/{}", asset.trim_start_matches("./")));
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{url}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{url}");
    }
    let init = client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"url\": \"/openapi.json\""), "{init}");
    // The public validator badge would send the document off the host.
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
}
