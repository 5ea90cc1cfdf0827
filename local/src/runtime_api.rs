//! A Lambda Runtime API on loopback: what a function binary talks to instead of the Lambda
//! service. Start one, spawn the binary with `AWS_LAMBDA_RUNTIME_API` set to [`RuntimeApi::addr`],
//! wait for it to ask for work ([`RuntimeApi::ready`]), then hand it events one at a time
//! ([`RuntimeApi::invoke`]). The bench times cold starts with it; `quiver-local rehearse` runs
//! every function through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

/// How an invocation ended: the function's response, or the error it reported.
#[derive(Debug)]
pub enum Outcome {
    Response(String),
    Error(String),
}

/// What the function has told the API about its init.
#[derive(Debug, Clone)]
enum Init {
    Running,
    /// It asked for its first event: init is done.
    Ready(Instant),
    /// It posted to `/runtime/init/error`.
    Failed(String),
}

struct Job {
    event: String,
    deadline: SystemTime,
    done: oneshot::Sender<Outcome>,
}

struct Shared {
    jobs: Mutex<mpsc::UnboundedReceiver<Job>>,
    waiting: std::sync::Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init: watch::Sender<Init>,
    function_arn: String,
}

/// One emulated Runtime API, for one function process.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    jobs: mpsc::UnboundedSender<Job>,
    init: watch::Receiver<Init>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Listens on a free loopback port. `function` names the function in the invoked ARN.
    pub async fn start(function: &str) -> Result<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let (init, init_rx) = watch::channel(Init::Running);
        let shared = Arc::new(Shared {
            jobs: Mutex::new(rx),
            waiting: Default::default(),
            init,
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = crate::serve::listen("127.0.0.1:0").await?;
        let addr = axum::serve::Listener::local_addr(&listener)?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi { addr, jobs, init: init_rx, server })
    }

    /// Waits until the function asks for its first event (init done), and returns when it did.
    /// Fails when it reports an init error or takes longer than `within`.
    pub async fn ready(&self, within: Duration) -> Result<Instant> {
        let mut init = self.init.clone();
        let state = tokio::time::timeout(within, init.wait_for(|i| !matches!(i, Init::Running)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match state {
            Ok(Ok(Init::Ready(at))) => Ok(at),
            Ok(Ok(Init::Failed(body))) => bail!("init failed: {body}"),
            Ok(Ok(Init::Running)) => unreachable!("wait_for returns a state that is not Running"),
            Ok(Err(_)) => bail!("the runtime API stopped"),
            Err(_) => bail!("init did not finish within {} s", within.as_secs_f64()),
        }
    }

    /// Hands the function `event` and waits for its outcome; past `timeout` (the function's
    /// configured timeout) it is a failure, as Lambda would end the invocation.
    pub async fn invoke(&self, event: String, timeout: Duration) -> Result<Outcome> {
        let (done, outcome) = oneshot::channel();
        let deadline = SystemTime::now() + timeout;
        if self.jobs.send(Job { event, deadline, done }).is_err() {
            bail!("the runtime API stopped");
        }
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => bail!("the runtime API dropped the invocation"),
            Err(_) => {
                bail!("no answer within the function's timeout ({} s)", timeout.as_secs_f64())
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(s): State<Arc<Shared>>) -> axum::response::Response {
    s.init.send_if_modified(|i| match i {
        Init::Running => {
            *i = Init::Ready(Instant::now());
            true
        }
        _ => false,
    });
    // The runtime asks for one event at a time; a later `next` waits here until there is one.
    let job = s.jobs.lock().await.recv().await;
    let Some(job) = job else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = format!(
        "00000000-0000-4000-8000-{:012}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    s.waiting.lock().unwrap().insert(id.clone(), job.done);
    let deadline = job.deadline.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    axum::response::Response::builder()
        .header("lambda-runtime-aws-request-id", &id)
        .header("lambda-runtime-deadline-ms", deadline.to_string())
        .header("lambda-runtime-invoked-function-arn", &s.function_arn)
        .header(
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000001;Parent=0000000000000001;Sampled=1",
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from(job.event))
        .unwrap()
}

fn finish(s: &Shared, id: &str, outcome: Outcome) -> axum::http::StatusCode {
    match s.waiting.lock().unwrap().remove(id) {
        Some(done) => {
            let _ = done.send(outcome);
            axum::http::StatusCode::ACCEPTED
        }
        None => axum::http::StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> axum::http::StatusCode {
    finish(&s, &id, Outcome::Response(body))
}

async fn error(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> axum::http::StatusCode {
    finish(&s, &id, Outcome::Error(body))
}

async fn init_error(State(s): State<Arc<Shared>>, body: String) -> axum::http::StatusCode {
    s.init.send_replace(Init::Failed(body));
    axum::http::StatusCode::ACCEPTED
}
