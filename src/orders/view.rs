//! An order as `GET /v1/orders/{source}/{order_id}` shows it: its true
//! state, its history, and whether the buyer's email went out. Never the key.

use serde::Serialize;

use crate::{clock::rfc3339, db::Db, intake::normalize::Source, jobs, on_db};

/// An order as `GET /v1/orders/{source}/{order_id}` shows it. Never the key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub source: String,
    pub order_id: String,
    pub state: String,
    pub email: Option<String>,
    pub product_sku: Option<String>,
    pub coupon_code: Option<String>,
    pub problem: Option<String>,
    /// The body as received, for orders that need attention.
    pub raw_body: Option<String>,
    pub received_at: String,
    pub updated_at: String,
    /// The buyer's key email, once queued.
    pub email_delivery: Option<Delivery>,
    pub history: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = EmailDelivery)]
pub struct Delivery {
    pub job_id: i64,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = OrderEvent)]
pub struct Event {
    pub at: String,
    pub state: String,
    pub detail: String,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: i64,
    source: String,
    order_id: String,
    state: String,
    email: Option<String>,
    product_sku: Option<String>,
    coupon_code: Option<String>,
    problem: Option<String>,
    raw_body: Option<Vec<u8>>,
    created_at: i64,
    updated_at: i64,
    email_job_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    at: i64,
    state: String,
    detail: String,
}

/// The order `order_id` from `source`, with its history.
pub async fn find(
    db: &Db,
    source: Source,
    order_id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    let source = source.as_str();
    let row: Option<ViewRow> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select id, source, order_id, state, email, product_sku, coupon_code,
                    problem, raw_body, created_at, updated_at, email_job_id
               from orders where source = ? and order_id = ?",
        ))
        .bind(source)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    let Some(row) = row else {
        return Ok(None);
    };
    let events: Vec<EventRow> = on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select at, state, detail from order_events where order_ref = ? order by id",
        ))
        .bind(row.id)
        .fetch_all(pool)
        .await
    })?;
    // The outbox owns the job; a discarded one leaves no delivery to show.
    let email_delivery = match row.email_job_id {
        Some(job_id) => jobs::find(db, job_id).await?.map(|job| Delivery {
            job_id,
            state: job.state.to_string(),
            attempts: job.attempts,
            last_error: job.last_error,
        }),
        None => None,
    };
    Ok(Some(OrderView {
        source: row.source,
        order_id: row.order_id,
        state: row.state,
        email: row.email,
        product_sku: row.product_sku,
        coupon_code: row.coupon_code,
        problem: row.problem,
        raw_body: row
            .raw_body
            .map(|body| String::from_utf8_lossy(&body).into_owned()),
        received_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        email_delivery,
        history: events
            .into_iter()
            .map(|e| Event {
                at: rfc3339(e.at),
                state: e.state,
                detail: e.detail,
            })
            .collect(),
    }))
}

/// How many orders are in each state (`/v1/stats`).
pub async fn count_by_state(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    crate::on_db!(db, read, |pool, sql| {
        sqlx::query_as(sql("select state, count(*) from orders group by state"))
            .fetch_all(pool)
            .await
    })
}

/// One line of the dashboard's order list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub id: i64,
    pub source: String,
    pub order_id: String,
    pub state: String,
    pub email: Option<String>,
    pub product_sku: Option<String>,
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub created_at: i64,
}

/// Which orders a page of the dashboard lists.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    pub state: Option<String>,
    /// An exact email address (served by `orders_email`).
    pub email: Option<String>,
    /// An exact order id, of any source.
    pub order_id: Option<String>,
    /// Keyset: only orders with a smaller id.
    pub before: Option<i64>,
}

/// Orders matching `browse`, newest first, at most `limit`; seeks by id,
/// never `OFFSET`.
pub async fn browse(db: &Db, browse: &Browse, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    let mut filters = Vec::new();
    let mut texts = Vec::new();
    for (column, value) in [
        ("state", &browse.state),
        ("email", &browse.email),
        ("order_id", &browse.order_id),
    ] {
        if let Some(value) = value {
            filters.push(format!("{column} = ?"));
            texts.push(value.as_str());
        }
    }
    if browse.before.is_some() {
        filters.push("id < ?".into());
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("where {}", filters.join(" and "))
    };
    let select = format!(
        "select id, source, order_id, state, email, product_sku, created_at from orders
          {filter} order by id desc limit ?"
    );
    on_db!(db, read, |pool, sql| {
        let mut query = sqlx::query_as::<_, Listed>(sql(select.clone()));
        for text in &texts {
            query = query.bind(*text);
        }
        if let Some(before) = browse.before {
            query = query.bind(before);
        }
        query.bind(limit).fetch_all(pool).await
    })
}
