//! Lambda glue: tracing as Lambda expects it, a cold-start line with the init duration, and
//! `lambda_http::run` around the function's routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;

/// What `main` returns: any error at init fails the cold start with its message.
pub use lambda_http::Error;

static INIT_STARTED: OnceLock<Instant> = OnceLock::new();
static COLD: AtomicBool = AtomicBool::new(true);

/// Call first in `main`: starts the init clock and sets up logging (JSON when Lambda asks for it).
pub fn init() {
    INIT_STARTED.get_or_init(Instant::now);
    lambda_http::tracing::init_default_subscriber();
}

/// Serves `routes` through the Lambda runtime, wrapped in the shared HTTP middleware.
pub async fn run(routes: Router) -> Result<(), lambda_http::Error> {
    let init_ms = INIT_STARTED.get().map(|t| t.elapsed().as_secs_f64() * 1e3).unwrap_or(0.0);
    let app = crate::http::app(routes).layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| async move {
        if COLD.swap(false, Ordering::Relaxed) {
            tracing::info!(init_ms, function = %std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(), "cold start");
        }
        next.run(req).await
    }));
    lambda_http::run(app).await
}
