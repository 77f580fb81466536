//! Test plumbing: fresh databases per backend, the app in-process on a random
//! port, `allot` child processes, and a starting gate for races.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use allot::{Application, config::Settings};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// Expands to one `#[tokio::test]` per backend for each named scenario
/// `async fn scenario(backend: Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                super::$scenario($crate::helpers::Backend::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                if $crate::helpers::Backend::Postgres.available() {
                    super::$scenario($crate::helpers::Backend::Postgres).await
                }
            })+
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                if $crate::helpers::Backend::MySql.available() {
                    super::$scenario($crate::helpers::Backend::MySql).await
                }
            })+
        }
    };
}

impl Backend {
    fn env_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("ALLOT_TEST_POSTGRES_URL"),
            Backend::MySql => Some("ALLOT_TEST_MYSQL_URL"),
        }
    }

    /// Whether this backend's server is configured. Under `CI=true` a
    /// missing server is a failure, never a skip.
    pub fn available(self) -> bool {
        let Some(var) = self.env_var() else {
            return true;
        };
        if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {var} is not set: the {self:?} tests cannot run");
        }
        eprintln!("notice: {var} not set, skipping the {self:?} variant of this test");
        false
    }
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        let name = format!("allot_t_{}", uuid::Uuid::new_v4().simple());
        let Some(var) = backend.env_var() else {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("allot.db").display());
            return Self {
                url,
                backend,
                admin_url: None,
                name,
                _dir: Some(dir),
            };
        };
        let admin_url = std::env::var(var).expect("checked by Backend::available");
        match backend {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("{var}={admin_url} unreachable: {e}"));
                conn.execute(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .await
                    .expect("create test database");
            }
            Backend::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("{var}={admin_url} unreachable: {e}"));
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "create database {name} character set utf8mb4 collate utf8mb4_bin"
                )))
                .await
                .expect("create test database");
            }
            Backend::Sqlite => unreachable!(),
        }
        let mut url = url::Url::parse(&admin_url).expect("database URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            backend,
            admin_url: Some(admin_url),
            name,
            _dir: None,
        }
    }
}

impl TestDb {
    /// Drops the database now (server backends only); later queries fail.
    pub fn drop_database(&self) {
        let Some(admin_url) = self.admin_url.clone() else {
            return;
        };
        let (backend, name) = (self.backend, self.name.clone());
        // Also called from `Drop`, inside the test's runtime: do the async
        // work on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let result = match backend {
                    Backend::Postgres => {
                        let sql = format!("drop database if exists {name} with (force)");
                        match sqlx::PgConnection::connect(&admin_url).await {
                            Ok(mut c) => c.execute(sqlx::AssertSqlSafe(sql)).await.map(drop),
                            Err(e) => Err(e),
                        }
                    }
                    _ => {
                        let sql = format!("drop database if exists {name}");
                        match sqlx::MySqlConnection::connect(&admin_url).await {
                            Ok(mut c) => c.execute(sqlx::AssertSqlSafe(sql)).await.map(drop),
                            Err(e) => Err(e),
                        }
                    }
                };
                if let Err(e) = result {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.drop_database();
    }
}

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
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            ..Settings::default()
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

impl TestApp {
    /// An app that takes orders: webhook token [`TOKEN`], admin
    /// `admin@shop.test`, Amelia service 3 sold as SKU `course-101`.
    pub async fn shop(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_with(backend, |settings| {
            settings.intake.webhook_token = Some(TOKEN.to_string().into());
            settings.mail.admin_email = Some("admin@shop.test".into());
            settings
                .intake
                .service_skus
                .insert("3".into(), "course-101".into());
            tweak(settings);
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
        let settings = Settings {
            database_url: self.db.url.clone(),
            ..Settings::default()
        };
        allot::db::Db::connect(&settings).await.expect("connect")
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

/// Waits for a condition on the outside world (files, rows), up to 30 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

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

/// `allot` as a child process, with a clean `ALLOT_*` environment and a
/// working directory of its own.
pub fn allot_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allot"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ALLOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).env("ALLOT_LOG_FORMAT", "json");
    cmd
}

/// A running `allot serve` whose address was read from its own log.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    pub fn start(dir: &std::path::Path, database_url: &str) -> Self {
        Self::start_with(dir, database_url, &[])
    }

    /// `allot serve` with extra `ALLOT_*` settings.
    pub fn start_with(dir: &std::path::Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = allot_command(dir)
            .arg("serve")
            .envs(env.iter().copied())
            .env("ALLOT_DATABASE_URL", database_url)
            .env("ALLOT_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn allot serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "listening"
                {
                    let _ = addr_tx.send(event["addr"].as_str().unwrap_or_default().to_string());
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("allot serve did not start: {:?}", log.lock().unwrap()));
        Self {
            child,
            addr: addr.parse().expect("listening address"),
            log,
            reader: Some(reader),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits until the server has logged a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit; its exit code and whole log.
    pub fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let exit = self.child.wait().expect("wait for allot serve");
        // The reader thread ends when the pipe closes, after the last line.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap().clone();
        (exit.code(), log)
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> (Option<i32>, Vec<String>) {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let mut settings = Settings {
            database_url: test_db.url.clone(),
            ..Settings::default()
        };
        settings.mail.transport = MailTransport::File {
            dir: mail_dir.path().to_path_buf(),
        };
        settings.mail.admin_email = Some("admin@shop.test".into());
        settings.mail.send_timeout = Duration::from_secs(5);
        settings.jobs.retry_schedule = vec![
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(300),
        ];
        settings.jobs.alert_interval = Duration::from_secs(60);
        tweak(&mut settings);
        let db = allot::db::Db::connect(&settings).await.expect("connect");
        db.migrate().await.expect("migrate");
        Self {
            db,
            settings,
            mail_dir,
            _test_db: test_db,
        }
    }

    pub fn worker(&self) -> allot::jobs::Worker {
        allot::jobs::Worker::new(self.db.clone(), &self.settings).expect("worker")
    }

    /// Queues an email job now; its id.
    pub async fn queue_email(&self, to: &str, template: &str, context: Value) -> i64 {
        let job = allot::mail::email_job(to, template, context, self.settings.jobs.max_attempts());
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

pub fn read_eml_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test SMTP server (`tests/support/smtp_server.py`, aiosmtpd) as a
/// child process; see that file for its behaviours.
pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// `None` (with a notice) when aiosmtpd is not installed, except under
    /// `CI=true`, where that is a failure.
    pub fn start(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let has_aiosmtpd = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_aiosmtpd {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but python3 cannot import aiosmtpd (pip install aiosmtpd)");
            }
            eprintln!("notice: aiosmtpd not installed, skipping this SMTP test");
            return None;
        }
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), dir.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP server");
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "SMTP server did not start");
        Some(Self { port, dir, child })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<String> {
        read_eml_files(self.dir.path())
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
