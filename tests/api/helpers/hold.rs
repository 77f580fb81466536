//! What group-commit tests use to hold a batch up in the database and to
//! make one row of a batch fail: a transaction of another connection, and
//! a trigger.

use sqlx::{Connection, Executor};

use super::Backend;

/// A transaction of another connection that holds what a batch needs next:
/// on SQLite the write lock, on the servers whatever `statement` locks.
pub enum Holder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

impl Holder {
    pub async fn hold(backend: Backend, url: &str, statement: &str) -> Self {
        // The tests' own statements, some with ids they worked out.
        let statement = || sqlx::AssertSqlSafe(statement.to_string());
        match backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                c.execute("begin immediate").await.unwrap();
                Holder::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                c.execute("begin").await.unwrap();
                c.execute(statement()).await.unwrap();
                Holder::Postgres(c)
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
                c.execute("begin").await.unwrap();
                c.execute(statement()).await.unwrap();
                Holder::MySql(c)
            }
        }
    }

    /// Commits the transaction: what it wrote is there for everyone.
    pub async fn commit(self) {
        self.end("commit").await
    }

    /// Rolls the transaction back: what it held was never there.
    pub async fn release(self) {
        self.end("rollback").await
    }

    async fn end(self, how: &'static str) {
        match self {
            Holder::Sqlite(mut c) => c.execute(how).await.map(drop),
            Holder::Postgres(mut c) => c.execute(how).await.map(drop),
            Holder::MySql(mut c) => c.execute(how).await.map(drop),
        }
        .unwrap();
    }
}

/// A trigger that makes inserting a row into `table` whose `column` is
/// `value` fail.
pub async fn reject_inserts(backend: Backend, url: &str, table: &str, column: &str, value: &str) {
    let sql = match backend {
        Backend::Sqlite => format!(
            "create trigger reject_row before insert on {table}
               when new.{column} = '{value}'
             begin select raise(abort, 'row rejected'); end"
        ),
        Backend::Postgres => format!(
            "create function reject_row() returns trigger language plpgsql as $$
             begin
               if new.{column} = '{value}' then raise exception 'row rejected'; end if;
               return new;
             end $$;
             create trigger reject_row before insert on {table}
               for each row execute function reject_row();"
        ),
        Backend::MySql => format!(
            "create trigger reject_row before insert on {table} for each row
             begin
               if new.{column} = '{value}' then
                 signal sqlstate '45000' set message_text = 'row rejected';
               end if;
             end"
        ),
    };
    let sql = sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    match backend {
        Backend::Sqlite => sqlx::SqliteConnection::connect(url)
            .await
            .unwrap()
            .execute(sql)
            .await
            .map(drop),
        Backend::Postgres => sqlx::PgConnection::connect(url)
            .await
            .unwrap()
            .execute(sql)
            .await
            .map(drop),
        Backend::MySql => sqlx::MySqlConnection::connect(url)
            .await
            .unwrap()
            .execute(sql)
            .await
            .map(drop),
    }
    .unwrap();
}
