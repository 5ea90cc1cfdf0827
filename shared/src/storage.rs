//! S3: one client per instance, path-style when `AWS_ENDPOINT_URL_S3` points at MinIO or the
//! embedded server, and an operation timeout on every call.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::Region;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};

/// The dependency name used in 503s and `/health`.
pub const NAME: &str = "s3";

#[derive(Clone, Debug)]
pub struct Storage {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub timeout: Duration,
}

impl Storage {
    /// Builds the client; no request is made until the first call.
    pub async fn new(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        let bucket = cfg
            .bucket
            .clone()
            .ok_or(ConfigError { var: "QUIVER_BUCKET", problem: "is not set".into() })?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(cfg.s3_timeout.min(Duration::from_secs(3)))
            .operation_attempt_timeout(cfg.s3_timeout)
            .operation_timeout(cfg.s3_timeout)
            .build();
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .timeout_config(timeouts)
            .load()
            .await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &cfg.s3_endpoint {
            b = b.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(Storage {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket,
            timeout: cfg.s3_timeout,
        })
    }

    /// `HeadBucket`: the bucket exists and we may read it.
    pub async fn head_bucket(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error("HeadBucket", &self.bucket, e))
    }
}

/// Every S3 failure is a 503 that names the operation and the object; the SDK's display is terse,
/// so the source chain is walked for the reason.
pub fn s3_error<E: std::error::Error + 'static>(op: &str, key: &str, e: E) -> Error {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason = s.to_string();
        src = s.source();
    }
    Error::unavailable(NAME, format!("{op} {key}: {reason}"))
}
