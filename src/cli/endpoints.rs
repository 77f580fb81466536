//! `allot endpoints …`: the merchant endpoints that receive signed events.

use clap::Subcommand;

use super::one_line;
use crate::{
    clock::now_ms,
    config::Settings,
    db::Db,
    merchant::{
        EVENT_TYPES,
        endpoints::{self, NewEndpoint},
    },
};

#[derive(Subcommand)]
pub(super) enum EndpointsCommand {
    /// Register an endpoint; prints its id and signing secret.
    Add {
        url: String,
        /// Comma-separated event types or groups (order.*); default: all.
        #[arg(long)]
        events: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Put the license key in the payload of key events (off by default).
        #[arg(long)]
        include_keys: bool,
    },
    /// Every endpoint, its subscriptions and health.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print an endpoint's current signing secret.
    Secret { id: i64 },
    /// Stop sending to an endpoint.
    Disable { id: i64 },
    /// Send to an endpoint again.
    Enable { id: i64 },
    /// A new signing secret; the old one keeps signing for 24 hours.
    RotateSecret { id: i64 },
    /// Remove an endpoint and its attempt log.
    Remove { id: i64 },
    /// Requeue an endpoint's dead deliveries.
    Redrive { id: i64 },
    /// The latest delivery attempts to an endpoint.
    Attempts {
        id: i64,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

fn missing(id: i64) -> anyhow::Error {
    anyhow::anyhow!("no endpoint {id}; `allot endpoints list` shows them")
}

pub(super) async fn run(
    command: EndpointsCommand,
    db: &Db,
    settings: &Settings,
) -> anyhow::Result<()> {
    let now = now_ms();
    match command {
        EndpointsCommand::Add {
            url,
            events,
            description,
            include_keys,
        } => {
            let new = NewEndpoint::parse(
                &url,
                events.as_deref(),
                description.as_deref(),
                include_keys,
            )
            .map_err(anyhow::Error::msg)?;
            let (id, secret) = endpoints::add(db, &new, now).await?;
            println!("endpoint {id} added for {}", new.events);
            println!("signing secret: {secret}");
            println!(
                "(verify each request's webhook-signature with it; `allot endpoints secret {id}` shows it again)"
            );
        }
        EndpointsCommand::List { json } => {
            let list = endpoints::list(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no endpoints; add one with `allot endpoints add URL` (events: {})",
                    EVENT_TYPES.join(", ")
                );
            } else {
                println!(
                    "{:>4}  {:<8}  {:<36}  {:<28}  health",
                    "id", "state", "url", "events"
                );
                for e in list {
                    let state = if e.enabled.0 { "enabled" } else { "disabled" };
                    let health = match (&e.disabled_reason, e.failing_since) {
                        (Some(reason), _) if !e.enabled.0 => one_line(reason, 60),
                        (_, Some(since)) => {
                            format!("failing since {}", crate::clock::rfc3339(since))
                        }
                        (_, None) if e.last_success_at.is_some() => "ok".into(),
                        _ => "no deliveries yet".into(),
                    };
                    println!(
                        "{:>4}  {:<8}  {:<36}  {:<28}  {health}",
                        e.id,
                        state,
                        one_line(&e.url, 36),
                        one_line(&e.events, 28)
                    );
                }
            }
        }
        EndpointsCommand::Secret { id } => {
            println!(
                "{}",
                endpoints::secret(db, id)
                    .await?
                    .ok_or_else(|| missing(id))?
            );
        }
        EndpointsCommand::Disable { id } => {
            if !endpoints::set_enabled(db, id, false, Some("disabled by an operator"), now).await? {
                return Err(missing(id));
            }
            println!(
                "endpoint {id} disabled: nothing is sent to it until `allot endpoints enable {id}`"
            );
        }
        EndpointsCommand::Enable { id } => {
            if !endpoints::set_enabled(db, id, true, None, now).await? {
                return Err(missing(id));
            }
            println!(
                "endpoint {id} enabled; `allot endpoints redrive {id}` resends what died meanwhile"
            );
        }
        EndpointsCommand::RotateSecret { id } => {
            let secret = endpoints::rotate_secret(db, id, now)
                .await?
                .ok_or_else(|| missing(id))?;
            println!("new signing secret: {secret}");
            println!(
                "(requests carry both signatures for 24 hours, so receivers can switch without missing one)"
            );
        }
        EndpointsCommand::Remove { id } => {
            if !endpoints::remove(db, id).await? {
                return Err(missing(id));
            }
            println!("endpoint {id} removed");
        }
        EndpointsCommand::Redrive { id } => {
            endpoints::find(db, id).await?.ok_or_else(|| missing(id))?;
            let n = endpoints::redrive(db, id, settings.jobs.max_attempts()).await?;
            println!("requeued {n} dead deliveries to endpoint {id}");
        }
        EndpointsCommand::Attempts { id, json, limit } => {
            endpoints::find(db, id).await?.ok_or_else(|| missing(id))?;
            let list = endpoints::attempts(db, id, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no attempts yet");
            } else {
                for a in list {
                    let status = a.status.map_or_else(|| "-".into(), |s| s.to_string());
                    println!(
                        "{}  event {} ({})  attempt {}  {}  {} ms  {}  {}",
                        crate::clock::rfc3339(a.at),
                        a.event_id,
                        a.event_type,
                        a.attempt,
                        status,
                        a.duration_ms,
                        a.outcome,
                        one_line(&a.response, 80)
                    );
                }
            }
        }
    }
    Ok(())
}
