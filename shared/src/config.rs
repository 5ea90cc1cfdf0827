//! Typed configuration, read once at init so that a bad setting fails the cold start, not a request.

use std::collections::HashMap;
use std::time::Duration;

/// A missing or malformed variable; the message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// Every setting a Quiver function reads. Optional services are `None` until a function requires them.
/// `Debug` prints the URLs with their passwords replaced, so a logged config leaks nothing.
#[derive(Clone)]
pub struct Config {
    /// `QUIVER_DATABASE_URL`: `postgres://user:pass@host:port/db`.
    pub database_url: Option<String>,
    /// `QUIVER_DATABASE_SECRET_ARN`: on AWS, the secret `quiver::secrets` turns into `database_url` at init.
    pub database_secret_arn: Option<String>,
    /// `QUIVER_VALKEY_URL`: `redis://` locally, `rediss://` for ElastiCache.
    pub valkey_url: Option<String>,
    /// `QUIVER_VALKEY_CA_FILE`: PEM CA certificates a `rediss://` server must chain to, instead of
    /// the public (Mozilla) roots; for self-signed servers and tests.
    pub valkey_ca_file: Option<String>,
    /// `QUIVER_PG_CA_FILE`: PEM CA certificates for `sslmode=verify-ca`/`verify-full` (and, as in
    /// libpq, `require`), instead of the public roots; e.g. the RDS global bundle.
    pub pg_ca_file: Option<String>,
    /// `QUIVER_BUCKET`: where snapshots and indexes live.
    pub bucket: Option<String>,
    /// `AWS_ENDPOINT_URL_S3`: set for MinIO or the embedded S3 server; switches to path-style.
    pub s3_endpoint: Option<String>,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: String,
    /// `QUIVER_CACHE_TTL_S` (default 300).
    pub cache_ttl: Duration,
    /// `QUIVER_CURSOR_KEY`: the key that signs `events`' page cursors (at least 32 characters);
    /// unset, it is derived from the database URL.
    pub cursor_key: Option<String>,
    /// `QUIVER_IDEMPOTENCY_TTL_H` (default 24): how long an `Idempotency-Key` replays its answer.
    pub idempotency_ttl: Duration,
    /// `QUIVER_PG_TIMEOUT_MS` (default 5000): connect and per-statement limit.
    pub pg_timeout: Duration,
    /// `QUIVER_PG_POOL_SIZE` (default 1 on Lambda, 8 elsewhere).
    pub pg_pool_size: usize,
    /// `QUIVER_VALKEY_TIMEOUT_MS` (default 25): past this the cache is bypassed.
    pub valkey_timeout: Duration,
    /// `QUIVER_S3_TIMEOUT_MS` (default 10000): per S3 operation.
    pub s3_timeout: Duration,
    /// `QUIVER_HEALTH_TIMEOUT_MS` (default 2000): per dependency probe in `/health`.
    pub health_timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` in MB (read only; `None` outside Lambda).
    pub memory_mb: Option<u32>,
    /// `AWS_LAMBDA_FUNCTION_NAME` is set: we run inside Lambda.
    pub on_lambda: bool,
    /// `QUIVER_TMP_DIR` (default `/tmp`): where snapshots and indexes are unpacked.
    pub tmp_dir: String,
}

/// The service a function needs; used to name the missing variable.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    Database,
    Valkey,
    Bucket,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a map of variables; tests use this instead of mutating the process environment.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let database_url = get("QUIVER_DATABASE_URL");
        if let Some(u) = &database_url {
            check_url("QUIVER_DATABASE_URL", u, &["postgres", "postgresql"])?;
        }
        let valkey_url = get("QUIVER_VALKEY_URL");
        if let Some(u) = &valkey_url {
            check_url("QUIVER_VALKEY_URL", u, &["redis", "rediss", "valkey", "valkeys"])?;
        }
        let s3_endpoint = get("AWS_ENDPOINT_URL_S3").or_else(|| get("AWS_ENDPOINT_URL"));
        if let Some(u) = &s3_endpoint {
            check_url("AWS_ENDPOINT_URL_S3", u, &["http", "https"])?;
        }
        let bucket = get("QUIVER_BUCKET");
        if let Some(b) = &bucket {
            let ok = (3..=63).contains(&b.len())
                && b.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'
                });
            if !ok {
                return Err(ConfigError {
                    var: "QUIVER_BUCKET",
                    problem: format!(
                        "{b:?} is not a valid bucket name (3-63 chars of a-z, 0-9, '-', '.')"
                    ),
                });
            }
        }
        let on_lambda = get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let ms = |var: &'static str, default: u64, max: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(number(var, get(var), default, 1, max)?))
        };
        Ok(Config {
            database_url,
            database_secret_arn: get("QUIVER_DATABASE_SECRET_ARN"),
            valkey_url,
            valkey_ca_file: get("QUIVER_VALKEY_CA_FILE"),
            pg_ca_file: get("QUIVER_PG_CA_FILE"),
            bucket,
            s3_endpoint,
            region: get("AWS_REGION")
                .or_else(|| get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            cache_ttl: Duration::from_secs(number(
                "QUIVER_CACHE_TTL_S",
                get("QUIVER_CACHE_TTL_S"),
                300,
                1,
                86_400 * 30,
            )?),
            cursor_key: match get("QUIVER_CURSOR_KEY") {
                Some(k) if k.len() < 32 => {
                    return Err(ConfigError {
                        var: "QUIVER_CURSOR_KEY",
                        problem: "must be at least 32 characters".into(),
                    })
                }
                k => k,
            },
            idempotency_ttl: Duration::from_secs(
                3_600
                    * number(
                        "QUIVER_IDEMPOTENCY_TTL_H",
                        get("QUIVER_IDEMPOTENCY_TTL_H"),
                        24,
                        1,
                        24 * 30,
                    )?,
            ),
            pg_timeout: ms("QUIVER_PG_TIMEOUT_MS", 5_000, 900_000)?,
            pg_pool_size: number(
                "QUIVER_PG_POOL_SIZE",
                get("QUIVER_PG_POOL_SIZE"),
                if on_lambda { 1 } else { 8 },
                1,
                256,
            )? as usize,
            valkey_timeout: ms("QUIVER_VALKEY_TIMEOUT_MS", 25, 60_000)?,
            s3_timeout: ms("QUIVER_S3_TIMEOUT_MS", 10_000, 900_000)?,
            health_timeout: ms("QUIVER_HEALTH_TIMEOUT_MS", 2_000, 60_000)?,
            memory_mb: match get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
                Some(v) => {
                    Some(number("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", Some(v), 0, 128, 10_240)? as u32)
                }
                None => None,
            },
            on_lambda,
            tmp_dir: get("QUIVER_TMP_DIR").unwrap_or_else(|| "/tmp".into()),
        })
    }

    /// Fails with the variable's name when a service the function needs is not configured.
    pub fn require(&self, needs: &[Need]) -> Result<(), ConfigError> {
        for need in needs {
            let (var, set) = match need {
                Need::Database => ("QUIVER_DATABASE_URL", self.database_url.is_some()),
                Need::Valkey => ("QUIVER_VALKEY_URL", self.valkey_url.is_some()),
                Need::Bucket => ("QUIVER_BUCKET", self.bucket.is_some()),
            };
            if !set {
                let problem = match need {
                    Need::Database => "is not set, and neither is QUIVER_DATABASE_SECRET_ARN (the Secrets Manager secret that holds it on AWS)",
                    _ => "is not set",
                };
                return Err(ConfigError { var, problem: problem.into() });
            }
        }
        Ok(())
    }
}

/// `url` with its password, if any, replaced by `***`: what logs and messages may show.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<not a URL>".into(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url.as_deref().map(redact))
            .field("database_secret_arn", &self.database_secret_arn)
            .field("valkey_url", &self.valkey_url.as_deref().map(redact))
            .field("valkey_ca_file", &self.valkey_ca_file)
            .field("pg_ca_file", &self.pg_ca_file)
            .field("bucket", &self.bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("region", &self.region)
            .field("cache_ttl", &self.cache_ttl)
            .field("cursor_key", &self.cursor_key.as_ref().map(|_| "***"))
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("pg_timeout", &self.pg_timeout)
            .field("pg_pool_size", &self.pg_pool_size)
            .field("valkey_timeout", &self.valkey_timeout)
            .field("s3_timeout", &self.s3_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("memory_mb", &self.memory_mb)
            .field("on_lambda", &self.on_lambda)
            .field("tmp_dir", &self.tmp_dir)
            .finish()
    }
}

fn check_url(var: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if schemes.contains(&u.scheme()) && u.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(())
        }
        Ok(u) if !schemes.contains(&u.scheme()) => Err(ConfigError {
            var,
            problem: format!("scheme {:?} is not one of {}", u.scheme(), schemes.join(", ")),
        }),
        // Never echo the value: it may hold a password.
        _ => Err(ConfigError { var, problem: "is not a valid URL with a host".into() }),
    }
}

/// A whole-number setting from the process environment within `range`, `default` when unset or
/// blank; the error names the variable. For the functions' own settings (`QUIVER_INDEX_CHECK_S`, ...).
pub fn setting(
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    setting_in(&std::env::vars().collect(), var, default, range)
}

/// [`setting`], read from a map of variables (tests use this instead of the process environment).
pub fn setting_in(
    vars: &HashMap<String, String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = vars.get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    number(var, value, default, *range.start(), *range.end())
}

fn number(
    var: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(ConfigError { var, problem: format!("{n} is outside {min}..={max}") }),
        Err(_) => Err(ConfigError { var, problem: format!("{v:?} is not a whole number") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.pg_pool_size, 8);
        assert_eq!(c.region, "us-east-1");
        assert!(!c.on_lambda);
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let c = Config::from_vars(&vars(&[
            ("QUIVER_DATABASE_URL", "postgres://quiver:hunter2-secret@db:5432/quiver"),
            ("QUIVER_VALKEY_URL", "rediss://default:valkey-secret@cache:6379"),
        ]))
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2-secret") && !shown.contains("valkey-secret"), "{shown}");
        assert!(shown.contains("postgres://quiver:***@db:5432/quiver"), "{shown}");
    }

    #[test]
    fn lambda_gets_one_connection() {
        let c = Config::from_vars(&vars(&[("AWS_LAMBDA_FUNCTION_NAME", "events")])).unwrap();
        assert_eq!(c.pg_pool_size, 1);
    }

    #[test]
    fn malformed_number_names_the_variable() {
        let e = Config::from_vars(&vars(&[("QUIVER_CACHE_TTL_S", "soon")])).unwrap_err();
        assert_eq!(e.var, "QUIVER_CACHE_TTL_S");
        assert!(e.to_string().contains("QUIVER_CACHE_TTL_S"));
        let e = Config::from_vars(&vars(&[("QUIVER_CACHE_TTL_S", "0")])).unwrap_err();
        assert!(e.problem.contains("outside"));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_secrets() {
        let e = Config::from_vars(&vars(&[("QUIVER_DATABASE_URL", "mysql://u:hunter2@h/db")]))
            .unwrap_err();
        assert_eq!(e.var, "QUIVER_DATABASE_URL");
        assert!(!e.to_string().contains("hunter2"));
        let e =
            Config::from_vars(&vars(&[("QUIVER_VALKEY_URL", "not a url hunter2")])).unwrap_err();
        assert_eq!(e.var, "QUIVER_VALKEY_URL");
        assert!(!e.to_string().contains("hunter2"));
        assert!(Config::from_vars(&vars(&[("QUIVER_BUCKET", "Bad_Bucket")])).is_err());
    }

    #[test]
    fn require_names_the_missing_variable() {
        let c = Config::from_vars(&vars(&[("QUIVER_BUCKET", "quiver")])).unwrap();
        assert!(c.require(&[Need::Bucket]).is_ok());
        assert_eq!(c.require(&[Need::Bucket, Need::Valkey]).unwrap_err().var, "QUIVER_VALKEY_URL");
    }
}
