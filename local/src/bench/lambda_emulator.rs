//! A minimal Lambda runtime API, enough to time a function binary's cold start: spawn it with
//! `AWS_LAMBDA_RUNTIME_API` pointing here, hand it one event, and note when it asks for work
//! (init done) and when it answers (first invocation done).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, Mutex};

/// One spawn, timed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ColdStart {
    pub init_ms: f64,
    pub first_invoke_ms: f64,
    pub total_ms: f64,
}

enum Mark {
    Next(Instant),
    Response(Instant, u16),
}

struct Emu {
    event: String,
    served: Mutex<bool>,
    tx: mpsc::UnboundedSender<Mark>,
}

async fn next(State(e): State<Arc<Emu>>) -> axum::response::Response {
    let _ = e.tx.send(Mark::Next(Instant::now()));
    let mut served = e.served.lock().await;
    if *served {
        // One invocation per spawn: park the runtime until it is killed.
        drop(served);
        std::future::pending::<()>().await;
        unreachable!();
    }
    *served = true;
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(30)).duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    axum::response::Response::builder()
        .header("lambda-runtime-aws-request-id", "00000000-0000-4000-8000-000000000001")
        .header("lambda-runtime-deadline-ms", deadline.to_string())
        .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
        .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000001")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(e.event.clone()))
        .unwrap()
}

async fn response(State(e): State<Arc<Emu>>, body: String) -> &'static str {
    let status = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["statusCode"].as_u64()).unwrap_or(200) as u16;
    let _ = e.tx.send(Mark::Response(Instant::now(), status));
    "{}"
}

async fn error(State(e): State<Arc<Emu>>, body: String) -> &'static str {
    tracing::warn!("function reported an error: {body}");
    let _ = e.tx.send(Mark::Response(Instant::now(), 599));
    "{}"
}

/// Spawns `binary` once against a fresh emulator and times init and the first invocation.
pub async fn cold_start(binary: &Path, function: &str, event: &str, env: &[(String, String)]) -> Result<ColdStart> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emu = Arc::new(Emu { event: event.to_string(), served: Mutex::new(false), tx });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(emu);
    let listener = crate::serve::listen("127.0.0.1:0").await?;
    let addr = axum::serve::Listener::local_addr(&listener)?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    let result = async {
        let mut init_done = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(Mark::Next(t))) => {
                    init_done.get_or_insert(t);
                }
                Ok(Some(Mark::Response(t, status))) => {
                    let init = init_done.context("answered before asking for work")?;
                    if status >= 500 {
                        bail!("{function} answered {status} to its first invocation");
                    }
                    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
                    return Ok(ColdStart {
                        init_ms: ms(init - spawned),
                        first_invoke_ms: ms(t - init),
                        total_ms: ms(t - spawned),
                    });
                }
                Ok(None) => bail!("emulator closed"),
                Err(_) => bail!("{function} did not answer within 60 s"),
            }
        }
    }
    .await;
    let _ = child.kill().await;
    server.abort();
    result
}
