//! The accept loop: every connection gets a deadline for its request
//! headers, and shutdown is graceful for the connections already open.
//!
//! `axum::serve` sets no timer on hyper, so a client that sends its headers
//! one byte a minute (slowloris) holds a connection and a task forever, and
//! a few thousand such clients exhaust the process's file descriptors. Here
//! hyper closes a connection whose headers are not complete within
//! `ALLOT_READ_TIMEOUT` (408 if it can still say so), idle keep-alive
//! connections included; the body's own deadline is [`super::read_body`].

use std::{io, time::Duration};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Serves `app` on `listener` until `shutdown`, then gives the requests in
/// flight `grace` to finish before it returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    shutdown: &CancellationToken,
    grace: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(read_timeout)
        .keep_alive_timeout(read_timeout);
    let connections = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Answers are small; Nagle would hold each one back for an ACK.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that went away or timed out is no error of ours.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(
            ?grace,
            "in-flight requests did not finish within the shutdown grace period"
        ),
    }
}

/// A failed `accept` must not end the server. Out of file descriptors or
/// memory, new connections wait in the kernel's backlog while the open ones
/// finish; anything else concerned only the connection that failed.
async fn accept_failed(error: io::Error) {
    let exhausted = matches!(error.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE
        || error.kind() == io::ErrorKind::OutOfMemory;
    if exhausted {
        metrics::counter!("allot_http_accept_errors_total").increment(1);
        tracing::error!(%error, "cannot accept connections; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        tracing::debug!(%error, "accepting a connection failed");
    }
}
