//! The API's HTTP server loop: the poem endpoint on hyper-util's automatic HTTP/1.1 / h2c
//! connections, with graceful shutdown. It replaces `poem::Server` so that a response body
//! that fails part-way ends its connection without the closing chunk.
//!
//! A streamed CSV export that fails after its head went out ends its body with an error
//! ([`super::export`]). hyper's HTTP/1 connection then finishes with that error and writes
//! nothing more, so the client sees a truncated chunked body (curl exit 18). `poem::Server`
//! (3.1.12, and poem's main branch as of this writing) polls the finished connection once more
//! (`graceful_shutdown()`, then `conn.await`). hyper does not guard against that: its
//! dispatcher, now without a body, ends the body normally and flushes the terminating
//! zero-length chunk. The failed export then looked like a complete file. Here a connection
//! that finished is never polled again.
//!
//! Behaviour otherwise follows `poem::Server::run_with_graceful_shutdown`: accept errors are
//! skipped, each connection runs in its own task, HTTP/2 header lists are capped at 16 KiB, and
//! after the shutdown signal the listener closes, open connections are asked to finish their
//! current request (keep-alive off, HTTP/2 GOAWAY) and are dropped after `grace`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, IntoEndpoint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// poem's default for `Server::http2_max_header_list_size`.
const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Serves `endpoint` on the connections of `acceptor` until `signal` completes, then lets open
/// connections finish their current request for up to `grace` and drops the rest.
pub async fn serve<A, E>(
    mut acceptor: A,
    endpoint: E,
    signal: impl Future<Output = ()>,
    grace: Duration,
) where
    A: Acceptor,
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let endpoint = Arc::new(endpoint.into_endpoint());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = acceptor.accept() => {
                // Like poem: a failed accept (the peer reset before it was accepted, or too many
                // open files) drops that connection only.
                let Ok((io, local, remote, scheme)) = accepted else {
                    continue;
                };
                connections.spawn(serve_connection(
                    io,
                    Peer { local, remote, scheme },
                    endpoint.clone(),
                    stop_rx.clone(),
                ));
            }
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.shutdown().await;
}

/// What poem's `Request` needs to know about a connection.
#[derive(Clone)]
struct Peer {
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
}

async fn serve_connection<Io, E>(
    io: Io,
    peer: Peer,
    endpoint: Arc<E>,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let endpoint = endpoint.clone();
        let peer = peer.clone();
        async move {
            let req = (req, peer.local, peer.remote, peer.scheme).into();
            let response: hyper::Response<_> = endpoint.get_response(req).await.into();
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        // Finished, also with an error (a failed response body): never poll it again, or
        // hyper would end the failed body like a complete one (see the module docs).
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
