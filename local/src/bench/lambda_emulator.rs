//! Cold starts, timed against the loopback Runtime API: spawn a function binary, hand it one
//! event, and note when it asks for work (init done) and when it answers.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::runtime_api::{Outcome, RuntimeApi};

/// One spawn, timed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ColdStart {
    pub init_ms: f64,
    pub first_invoke_ms: f64,
    pub total_ms: f64,
}

/// Spawns `binary` once against a fresh Runtime API and times init and the first invocation.
pub async fn cold_start(
    binary: &Path,
    function: &str,
    event: &str,
    env: &[(String, String)],
) -> Result<ColdStart> {
    let api = RuntimeApi::start(function).await?;
    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
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
        let init =
            api.ready(Duration::from_secs(60)).await.with_context(|| function.to_string())?;
        let outcome = api
            .invoke(event.to_string(), Duration::from_secs(60))
            .await
            .with_context(|| function.to_string())?;
        let answered = Instant::now();
        let status = match &outcome {
            Outcome::Response(body) => serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["statusCode"].as_u64())
                .unwrap_or(200),
            Outcome::Error(body) => {
                bail!("{function} reported an error to its first invocation: {body}")
            }
        };
        if status >= 500 {
            bail!("{function} answered {status} to its first invocation");
        }
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        Ok(ColdStart {
            init_ms: ms(init - spawned),
            first_invoke_ms: ms(answered - init),
            total_ms: ms(answered - spawned),
        })
    }
    .await;
    let _ = child.kill().await;
    result
}
