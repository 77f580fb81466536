//! The app in this process: served on a random port ([`TestApp`]), or its
//! worker driven step by step with a test clock ([`World`]).

use std::{net::SocketAddr, time::Duration};

use allot::{Application, config::Settings};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, TestDb, claim, client, email, eventually, get_coupon, post_json, read_eml_files,
    status_and_json,
};

/// The app served in this process on a random port, with a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    // Dropped after the server is told to stop (fields drop after `Drop::drop`).
    pub db: TestDb,
    mail_dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Mail goes to a temporary directory (file transport) unless `tweak`
    /// says otherwise; workers poll every 100 ms.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDb::create(backend).await;
        let mail_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            ..Settings::for_database(db.url.clone())
        };
        settings.mail.transport = allot::config::MailTransport::File {
            dir: mail_dir.path().to_path_buf(),
        };
        settings.jobs.poll_interval = Duration::from_millis(100);
        tweak(&mut settings);
        let app = Application::build(settings).await.expect("app builds");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            client: client(),
            shutdown,
            db,
            mail_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn create_coupon(&self, name: &str, amount: i64) -> reqwest::Response {
        post_json(
            &self.client,
            &self.url("/api/coupons"),
            json!({"name": name, "amount": amount}),
        )
        .await
    }

    pub async fn claim(&self, user_id: &str, coupon_name: &str) -> reqwest::Response {
        claim(&self.client, self.addr, user_id, coupon_name).await
    }

    /// POSTs `body` as-is, declared as JSON.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn coupon(&self, name: &str) -> reqwest::Response {
        get_coupon(&self.client, self.addr, name).await
    }
}

/// The webhook token of [`TestApp::shop`].
pub const TOKEN: &str = "test-webhook-token";

/// The admin token of [`TestApp::admin_shop`].
pub const ADMIN: &str = "test-admin-token";

impl TestApp {
    /// An app that takes orders: webhook token [`TOKEN`], admin
    /// `admin@shop.test`, Amelia service 3 sold as SKU `course-101`.
    pub async fn shop(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_with(backend, |settings| {
            settings.intake.webhook_token = Some(TOKEN.to_string().into());
            settings.mail.admin_email = Some(email("admin@shop.test"));
            settings
                .intake
                .service_skus
                .insert("3".into(), "course-101".into());
            tweak(settings);
        })
        .await
    }

    /// [`Self::shop`] with the admin routes on (token [`ADMIN`]).
    pub async fn admin_shop(backend: Backend) -> Self {
        Self::shop(backend, |s| {
            s.control.admin_token = Some(ADMIN.to_string().into())
        })
        .await
    }

    /// POSTs `body` to `/v1/webhooks/{path}` (path may carry `&sku=…`)
    /// with the right token.
    pub async fn webhook(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let url = self.url(&format!("/v1/webhooks/{path}?token={TOKEN}&{query}"));
        let response = self.client.post(url).body(body).send().await.expect("sent");
        status_and_json(response).await
    }

    /// The text of `GET /metrics` (the process's, shared by its tests).
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response.expect("sent").text().await.expect("a body")
    }

    /// `GET /v1/orders/{source}/{order_id}` with the right token.
    pub async fn order(&self, source: &str, order_id: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(&format!("/v1/orders/{source}/{order_id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sent");
        status_and_json(response).await
    }

    /// The `.eml` files the file transport wrote.
    pub fn mails(&self) -> Vec<String> {
        read_eml_files(self.mail_dir.path())
    }

    /// Waits until `n` mails for which `filter` holds were written.
    pub async fn wait_for_mails(&self, n: usize, filter: impl Fn(&str) -> bool) -> Vec<String> {
        let mut found = Vec::new();
        eventually(&format!("{n} mail(s)"), async || {
            found = self.mails().into_iter().filter(|m| filter(m)).collect();
            found.len() >= n
        })
        .await;
        found
    }

    /// A second connection to the app's database, to seed and inspect.
    pub async fn connect(&self) -> allot::db::Db {
        let settings = Settings::for_database(self.db.url.clone());
        allot::db::Db::connect(&settings.database)
            .await
            .expect("connect")
    }
}

/// Adds `keys` to the pool of `sku` (the import the CLI runs).
pub async fn seed_keys(db: &allot::db::Db, sku: &str, keys: &[String]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), keys.join("\n")).unwrap();
    let sku = allot::keys::Sku::parse(sku).unwrap();
    let report =
        allot::keys::import::import_file(db, file.path(), &sku, &indicatif::ProgressBar::hidden())
            .await
            .expect("import");
    assert_eq!(report.imported, keys.len() as u64);
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A database, settings and a mail directory, for driving
/// `Worker::run_once` with a clock of the test's choosing.
pub struct World {
    pub db: allot::db::Db,
    pub settings: Settings,
    pub mail_dir: tempfile::TempDir,
    _test_db: TestDb,
}

impl World {
    /// Defaults: file transport into `mail_dir`, admin `admin@shop.test`,
    /// retry schedule 10s,60s,300s (4 attempts), alert window 60s.
    pub async fn new(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        use allot::config::MailTransport;
        let test_db = TestDb::create(backend).await;
        let mail_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::for_database(test_db.url.clone());
        settings.mail.transport = MailTransport::File {
            dir: mail_dir.path().to_path_buf(),
        };
        settings.mail.admin_email = Some(email("admin@shop.test"));
        settings.mail.send_timeout = Duration::from_secs(5);
        settings.jobs.retry_schedule = vec![
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(300),
        ];
        settings.jobs.alert_interval = Duration::from_secs(60);
        tweak(&mut settings);
        let db = allot::db::Db::connect(&settings.database)
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        Self {
            db,
            settings,
            mail_dir,
            _test_db: test_db,
        }
    }

    pub fn worker(&self) -> allot::jobs::Worker {
        allot::app::worker(self.db.clone(), &self.settings).expect("worker")
    }

    /// Queues an email job now; its id.
    pub async fn queue_email(&self, to: &str, template: &str, context: Value) -> i64 {
        let job =
            allot::notices::email_job(to, template, context, self.settings.jobs.max_attempts());
        allot::jobs::enqueue_now(&self.db, &job)
            .await
            .unwrap()
            .expect("new job")
    }

    pub async fn job(&self, id: i64) -> allot::jobs::Job {
        allot::jobs::find(&self.db, id)
            .await
            .unwrap()
            .expect("job exists")
    }

    /// The `.eml` files the file transport wrote.
    pub fn mails(&self) -> Vec<String> {
        read_eml_files(self.mail_dir.path())
    }
}
