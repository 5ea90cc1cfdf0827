//! `snapshot`: exports `user_events` from PostgreSQL to zstd Parquet in S3 and publishes a
//! manifest, on a schedule (EventBridge) and on `POST /snapshot`. Readers (`analytics`) follow the
//! manifest, so publishing is all it takes to move every instance to the new data.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::StatusCode;
use quiver::config::ConfigError;
use quiver::http::{json, FromParams, Params, Query};
use quiver::pg::Pg;
pub use quiver::snapshot::{ExportReport, SnapshotSettings, Window};
use quiver::storage::Storage;
use quiver::{Config, Error, Result};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Per-instance state: the PostgreSQL pool, the S3 client, and a guard so that one instance runs
/// one export at a time.
pub struct Snapshot {
    pg: Pg,
    storage: Storage,
    settings: SnapshotSettings,
    running: tokio::sync::Mutex<()>,
}

impl Snapshot {
    pub async fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Self::with_settings(cfg, SnapshotSettings::from_env(cfg)?).await
    }

    /// With explicit settings (tests use their own S3 prefix and retention).
    pub async fn with_settings(
        cfg: &Config,
        settings: SnapshotSettings,
    ) -> std::result::Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(Snapshot {
            pg: Pg::new(cfg)?,
            storage: Storage::new(cfg).await?,
            settings,
            running: tokio::sync::Mutex::new(()),
        }))
    }

    /// Exports and publishes one version; a second export while one runs here is a 409.
    pub async fn run(&self, window: &Window) -> Result<ExportReport> {
        let _guard = self.running.try_lock().map_err(|_| {
            Error::Conflict(
                "a snapshot export is already running on this instance; retry when it is done"
                    .into(),
            )
        })?;
        // Boxed: the export's future is deep, and boxing keeps every caller's future small.
        Box::pin(quiver::snapshot::export(&self.pg, &self.storage, &self.settings, window)).await
    }

    /// What an EventBridge schedule triggers: a full export. Its report is the invocation's result.
    pub async fn on_schedule(
        self: Arc<Self>,
        event: serde_json::Value,
    ) -> Result<serde_json::Value> {
        tracing::info!(detail_type = %event.get("detail-type").and_then(|v| v.as_str()).unwrap_or(""), "scheduled snapshot");
        let report = self.run(&Window::default()).await?;
        serde_json::to_value(report)
            .map_err(|e| Error::Internal(format!("serializing the export report: {e}")))
    }
}

/// The route, registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Snapshot>> {
    OpenApiRouter::new().routes(routes!(create))
}

pub fn routes(state: Arc<Snapshot>) -> Router {
    Router::from(api()).with_state(state)
}

/// `POST /snapshot` exports the whole table. It takes no window: `analytics` serves the newest
/// published snapshot, so a windowed export published there would replace the full one (and
/// retention would then delete the full versions). A `from` or `to` is a 400 that says so.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Whole {}

impl FromParams for Whole {
    fn names() -> Vec<String> {
        vec!["from".into(), "to".into()]
    }

    fn from_params(p: &Params) -> Result<Self> {
        for name in ["from", "to"] {
            if p.get(name).is_some() {
                return Err(Error::bad_param(
                    name,
                    "a snapshot is always the whole table, since analytics serves the newest one; filter with from/to on the /analytics routes instead",
                ));
            }
        }
        Ok(Whole {})
    }
}

/// `POST /snapshot`: exports the whole table and answers with the report.
#[utoipa::path(post, path = "/snapshot", tag = "snapshot", operation_id = "create_snapshot",
    responses(
        (status = 201, description = "Exported and published: the manifest now points at this version.", body = ExportReport),
        (status = 409, description = "An export is already running on this instance.", body = quiver::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create(State(s): State<Arc<Snapshot>>, Query(_): Query<Whole>) -> Result<Response> {
    let report = s.run(&Window::default()).await?;
    Ok(json(StatusCode::CREATED, &report))
}
