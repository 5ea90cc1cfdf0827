//! The PostgreSQL URL from Secrets Manager. On AWS a function is given `QUIVER_DATABASE_SECRET_ARN`,
//! never a password in a variable or a template parameter, and reads the secret once, at init.
//!
//! Two shapes of secret are accepted: a plain `postgres://` URL, or the JSON that RDS and
//! `infra/template.yaml` store, `{"username", "password", "host", "port", "dbname"}`. A URL is
//! used as it is, `sslmode` included; the JSON shape gets `sslmode=require` (RDS always offers TLS,
//! and `require` never falls back to plain text) unless it has an `"sslmode"` of its own.

use std::time::{Duration, Instant};

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde_json::Value;

use crate::config::{Config, ConfigError};

const VAR: &str = "QUIVER_DATABASE_SECRET_ARN";

/// The longest wait for the secret. Lambda allows 10 s for all of init, and a cold start that
/// cannot read its secret should fail with this module's message, not with the platform's timeout.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Sets `cfg.database_url` from the secret named by `QUIVER_DATABASE_SECRET_ARN`. Does nothing when
/// no secret is named, or when `QUIVER_DATABASE_URL` is set (that one wins, e.g. in local runs).
pub async fn resolve_database_url(cfg: &mut Config) -> Result<(), ConfigError> {
    let Some(arn) = cfg.database_secret_arn.clone() else { return Ok(()) };
    if cfg.database_url.is_some() {
        tracing::info!(secret = %arn, "QUIVER_DATABASE_URL is set; not reading the secret");
        return Ok(());
    }
    let limit = cfg.pg_timeout.min(MAX_WAIT);
    let started = Instant::now();
    let secret = match tokio::time::timeout(limit, fetch(&arn, &cfg.region, limit)).await {
        Ok(secret) => secret?,
        Err(_) => {
            return Err(error(format!(
                "reading secret {arn} timed out after {} ms",
                limit.as_millis()
            )))
        }
    };
    cfg.database_url = Some(database_url_from_secret(&secret)?);
    // The ARN and the time only: the URL holds the password.
    tracing::info!(secret = %arn, ms = started.elapsed().as_secs_f64() * 1e3, "PostgreSQL URL read from Secrets Manager");
    Ok(())
}

/// Turns a secret's text into a PostgreSQL URL: a `postgres://` URL is kept as it is, the RDS JSON
/// shape is assembled into one (user and password percent-encoded, port 5432, database `postgres`
/// and `sslmode=require` when absent). Errors name the missing or bad field, never a value.
pub fn database_url_from_secret(secret: &str) -> Result<String, ConfigError> {
    let secret = secret.trim();
    if secret.starts_with('{') {
        return url_from_rds_json(secret);
    }
    match url::Url::parse(secret) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(secret.to_string())
        }
        _ => Err(error("the secret is neither a postgres:// URL nor JSON with username, password, host, port, dbname")),
    }
}

fn url_from_rds_json(secret: &str) -> Result<String, ConfigError> {
    // serde_json's own message is never shown: it quotes the text near the error, which may be the password.
    let json: Value = serde_json::from_str(secret)
        .map_err(|_| error("the secret starts with '{' but is not valid JSON"))?;
    let field = |name: &str| match json.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let required = |name: &str| {
        field(name).ok_or_else(|| error(format!("the secret's JSON has no {name:?} (expected username, password, host, port, dbname)")))
    };
    let (username, password, host) =
        (required("username")?, required("password")?, required("host")?);
    let port = match field("port") {
        None => 5432,
        Some(p) => {
            p.parse::<u16>().map_err(|_| error("the secret's \"port\" is not a port number"))?
        }
    };
    let dbname = field("dbname").unwrap_or_else(|| "postgres".into());
    let sslmode = field("sslmode").unwrap_or_else(|| "require".into());

    // An IPv6 address goes in brackets; anything else must parse as a host on its own.
    let host =
        if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    let url = format!(
        "postgres://{}:{}@{host}:{port}/{}?sslmode={}",
        encode(&username),
        encode(&password),
        encode(&dbname),
        encode(&sslmode)
    );
    match url::Url::parse(&url) {
        Ok(u) if u.host_str() == Some(host.as_str()) => Ok(url),
        _ => Err(error(format!("the secret's \"host\" {host:?} is not a host name"))),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters. `url::Url::set_password`
/// would leave a `%` as it is, and the password would then decode to something else.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn fetch(arn: &str, default_region: &str, limit: Duration) -> Result<String, ConfigError> {
    // A full ARN names its region; a plain secret name lives in the function's own.
    let region = arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|r| !r.is_empty())
        .unwrap_or(default_region);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(limit.min(Duration::from_secs(2)))
        .operation_attempt_timeout(limit)
        .operation_timeout(limit)
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .timeout_config(timeouts)
        .load()
        .await;
    let out = aws_sdk_secretsmanager::Client::new(&shared)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| error(format!("GetSecretValue {arn}: {}", DisplayErrorContext(&e))))?;
    if let Some(s) = out.secret_string() {
        return Ok(s.to_string());
    }
    out.secret_binary()
        .and_then(|b| std::str::from_utf8(b.as_ref()).ok())
        .map(str::to_string)
        .ok_or_else(|| error(format!("secret {arn} holds neither a string nor UTF-8 bytes")))
}

fn error(problem: impl Into<String>) -> ConfigError {
    ConfigError { var: VAR, problem: problem.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "p@ss:w/rd%41?#hunter2";

    fn rds_json(port: &str) -> String {
        format!(
            r#"{{"engine":"postgres","username":"quiver","password":"p@ss:w/rd%41?#hunter2","host":"quiver.abc123.eu-west-1.rds.amazonaws.com",{port}"dbname":"quiver","dbInstanceIdentifier":"quiver"}}"#
        )
    }

    #[test]
    fn rds_json_becomes_a_url_with_the_password_encoded() {
        let url = database_url_from_secret(&rds_json(r#""port":5432,"#)).unwrap();
        assert_eq!(url, "postgres://quiver:p%40ss%3Aw%2Frd%2541%3F%23hunter2@quiver.abc123.eu-west-1.rds.amazonaws.com:5432/quiver?sslmode=require");
        let parsed = url::Url::parse(&url).unwrap();
        let query = format!("p={}", parsed.password().unwrap());
        let decoded = url::form_urlencoded::parse(query.as_bytes()).next().unwrap().1.into_owned();
        assert_eq!(decoded, PASSWORD);
    }

    #[test]
    fn port_may_be_a_string_or_absent_and_dbname_defaults_to_postgres() {
        let url = database_url_from_secret(&rds_json(r#""port":"6432","#)).unwrap();
        assert!(url.ends_with(".rds.amazonaws.com:6432/quiver?sslmode=require"), "{url}");
        let url = database_url_from_secret(&rds_json("")).unwrap();
        assert!(url.contains(":5432/"), "{url}");
        let url = database_url_from_secret(r#"{"username":"u","password":"p","host":"10.0.1.5"}"#)
            .unwrap();
        assert_eq!(url, "postgres://u:p@10.0.1.5:5432/postgres?sslmode=require");
    }

    #[test]
    fn the_json_shape_may_choose_its_sslmode() {
        let url = database_url_from_secret(
            r#"{"username":"u","password":"p","host":"db","sslmode":"verify-full"}"#,
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/postgres?sslmode=verify-full");
    }

    #[test]
    fn a_plain_url_is_kept_as_it_is() {
        let plain = "postgresql://quiver:secret@db.internal:5432/quiver?sslmode=disable";
        assert_eq!(database_url_from_secret(&format!("  {plain}\n")).unwrap(), plain);
    }

    #[test]
    fn errors_name_the_field_and_never_the_password() {
        let missing_host = r#"{"username":"quiver","password":"hunter2"}"#;
        let e = database_url_from_secret(missing_host).unwrap_err();
        assert_eq!(e.var, VAR);
        assert!(e.problem.contains("\"host\""), "{e}");
        let e = database_url_from_secret(r#"{"username":"u","password":"hunter2","host":"db/x"}"#)
            .unwrap_err();
        assert!(e.problem.contains("not a host name"), "{e}");
        let url = database_url_from_secret(r#"{"username":"u","password":"p","host":"fd00::5"}"#)
            .unwrap();
        assert_eq!(url, "postgres://u:p@[fd00::5]:5432/postgres?sslmode=require");
        let bad = [
            r#"{"username":"quiver","password":"hunter2","host":"h","port":"hunter2"}"#.to_string(),
            r#"{"username":"quiver","password":hunter2}"#.to_string(),
            "mysql://quiver:hunter2@db/quiver".to_string(),
            "hunter2".to_string(),
        ];
        for secret in bad {
            let e = database_url_from_secret(&secret).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[cfg(feature = "pg")]
    #[test]
    fn tokio_postgres_reads_back_the_same_password() {
        use std::str::FromStr;
        let url = database_url_from_secret(&rds_json(r#""port":5432,"#)).unwrap();
        let pg = tokio_postgres::Config::from_str(&url).unwrap();
        assert_eq!(pg.get_password(), Some(PASSWORD.as_bytes()));
        assert_eq!(pg.get_dbname(), Some("quiver"));
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert!(crate::pg::Pg::connect_lazy(&url, 1, Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn nothing_is_fetched_without_a_secret_or_when_a_url_is_given() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let mut cfg = Config::from_vars(&vars(&[])).unwrap();
        resolve_database_url(&mut cfg).await.unwrap();
        assert_eq!(cfg.database_url, None);

        let mut cfg = Config::from_vars(&vars(&[
            (
                "QUIVER_DATABASE_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:quiver-db-AbCdEf",
            ),
            ("QUIVER_DATABASE_URL", "postgres://quiver:quiver@127.0.0.1:55432/quiver"),
        ]))
        .unwrap();
        resolve_database_url(&mut cfg).await.unwrap();
        assert_eq!(
            cfg.database_url.as_deref(),
            Some("postgres://quiver:quiver@127.0.0.1:55432/quiver")
        );
    }
}
