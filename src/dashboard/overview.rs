//! `GET /admin`: stock per SKU (sold out and low stock highlighted),
//! coupons, orders and jobs by state, and deliveries: the figures of
//! `/v1/stats`, and the last half hour minute by minute.

use axum::{extract::State, response::Html};
use serde::Serialize;
use serde_json::json;

use super::{Dashboard, page, page::Problem, session::Session};
use crate::{clock::now_ms, coupons, jobs::rollup, keys, stats};

/// How many minutes the deliveries chart shows.
const CHART_MINUTES: i64 = 30;

/// How many coupons the overview lists, newest first.
const COUPONS: i64 = 20;

#[derive(Serialize)]
struct Sku {
    #[serde(flatten)]
    stock: keys::Stock,
    /// `sold_out`, `low` or `ok`.
    level: &'static str,
}

/// The overview: stock, coupons, orders and jobs by state, deliveries per minute, the `/v1/stats` windows.
#[utoipa::path(get, path = "/admin", operation_id = "dashboardOverview", tag = "dashboard",
    security(("dashboard_session" = [])),
    responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 303, description = "Not signed in: to `/admin/login`")))]
pub(super) async fn show(
    session: Session,
    State(state): State<Dashboard>,
) -> Result<Html<String>, Problem> {
    let now = now_ms();
    let figures = stats::compute(&state.db, now).await?;
    let skus: Vec<Sku> = keys::stock(&state.db)
        .await?
        .into_iter()
        .map(|stock| Sku {
            level: match stock.available {
                0 => "sold_out",
                n if n <= state.low_stock => "low",
                _ => "ok",
            },
            stock,
        })
        .collect();
    let coupons = coupons::newest(&state.db, COUPONS).await?;
    let minutes = rollup::per_minute(&state.db, now, CHART_MINUTES).await?;
    let chart = Chart::of(&minutes);
    page::render(
        "overview.html",
        json!({
            "csrf": session.csrf(),
            "nav": "overview",
            "stats": figures,
            "skus": skus,
            "low_stock": state.low_stock,
            "coupons": coupons,
            "chart": chart,
        }),
    )
}

/// The deliveries chart as bars to draw: one per minute, heights scaled
/// to the busiest minute (an SVG drawn by the template, no script).
#[derive(Serialize)]
struct Chart {
    bars: Vec<Bar>,
    busiest: i64,
    total: i64,
}

#[derive(Serialize)]
struct Bar {
    x: usize,
    /// Percent of the chart's height.
    done: f64,
    failed: f64,
    label: String,
}

impl Chart {
    fn of(minutes: &[rollup::Minute]) -> Self {
        let busiest = minutes.iter().map(|m| m.done + m.failed).max().unwrap_or(0);
        let scale = |n: i64| {
            if busiest == 0 {
                0.0
            } else {
                (n as f64 * 100.0 / busiest as f64).round()
            }
        };
        let bars = minutes
            .iter()
            .enumerate()
            .map(|(x, m)| Bar {
                x,
                done: scale(m.done),
                failed: scale(m.failed),
                label: format!(
                    "{}: {} delivered, {} failed{}",
                    crate::clock::rfc3339(m.minute)
                        .get(11..16)
                        .unwrap_or_default(),
                    m.done,
                    m.failed,
                    m.p50_ms
                        .map(|ms| format!(", median latency {ms:.0} ms"))
                        .unwrap_or_default()
                ),
            })
            .collect();
        Self {
            bars,
            busiest,
            total: minutes.iter().map(|m| m.done + m.failed).sum(),
        }
    }
}
