//! Fresh databases: one per test, on each backend, dropped after it.

use sqlx::{Connection, Executor};

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
    /// A connection to this database with migrations applied, to seed and
    /// inspect it.
    pub async fn connect(&self) -> allot::db::Db {
        let settings = allot::config::Settings::for_database(self.url.clone());
        allot::db::Db::open(&settings.database)
            .await
            .expect("connect")
    }

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

/// `sql` is a `select count(*) …` (or any one bigint) without parameters.
pub async fn count(db: &allot::db::Db, sql: &str) -> i64 {
    use allot::db::Db;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db {
        Db::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::MySql(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Runs one statement built by the test (no parameters).
pub async fn execute(db: &allot::db::Db, sql: &str) {
    use allot::db::Db;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db {
        Db::Sqlite { writer, .. } => sqlx::query(sql).execute(writer).await.map(drop),
        Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Db::MySql(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap();
}
