//! `quiver-local serve`: every function's routes in one HTTP server, wrapped once in the same
//! middleware the Lambda binaries use.

use axum::serve::{Listener, ListenerExt};
use axum::Router;

/// Builds every function's state from the environment and merges their routes.
pub async fn router(cfg: quiver::Config) -> anyhow::Result<Router> {
    let routes = Router::new()
        .merge(health::routes(health::Health::new(cfg.clone()).await?))
        .merge(events::routes(events::Events::new(&cfg)?))
        .merge(pg_benchmark::routes(pg_benchmark::PgBenchmark::new(&cfg)?))
        .merge(process::routes(process::Process::new(&cfg)?))
        .merge(indexer::routes(indexer::Indexer::new(&cfg).await?))
        .merge(search::routes(search::Search::new(&cfg).await?))
        .merge(::snapshot::routes(::snapshot::Snapshot::new(&cfg).await?))
        .merge(analytics::routes(analytics::Analytics::new(&cfg).await?));
    Ok(quiver::http::app(routes))
}

/// The bundle's OpenAPI document, from every function's routes (`quiver-local openapi` prints
/// it; `functions/health/openapi.json` is a copy that a test keeps equal).
pub fn openapi() -> utoipa::openapi::OpenApi {
    quiver::openapi::finish([
        health::api().into_openapi(),
        events::api().into_openapi(),
        pg_benchmark::api().into_openapi(),
        process::api().into_openapi(),
        indexer::api().into_openapi(),
        search::api().into_openapi(),
        ::snapshot::api().into_openapi(),
        analytics::api().into_openapi(),
    ])
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut s = openapi().to_pretty_json().expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// A listener on `addr` whose connections send small replies at once (`TCP_NODELAY`): without it
/// a response's body can wait for the client's delayed ACK of its headers, up to 40 ms.
pub async fn listen(addr: &str) -> anyhow::Result<impl Listener<Addr = std::net::SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))?;
    Ok(listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    }))
}

pub async fn run(addr: Option<String>) -> anyhow::Result<()> {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    let app = router(quiver::Config::from_env()?).await?;
    let listener = listen(&addr).await?;
    tracing::info!("serving every function on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
