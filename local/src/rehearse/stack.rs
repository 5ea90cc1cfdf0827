//! The stack the rehearsal deploys into, on this machine and private to one run: PostgreSQL that
//! accepts TLS only (as RDS with `rds.force_ssl=1`), Valkey that speaks TLS only (as ElastiCache
//! Serverless), the embedded S3 server with a new bucket, and moto's Secrets Manager holding the
//! database secret in both shapes the template supports.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver::testing::{free_port, PrivatePostgres, PrivateValkey, ScratchDir, TestCerts};

pub const REGION: &str = "us-east-1";

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    pub certs: TestCerts,
    /// Runs until the stack is dropped; the functions reach it through the secrets.
    _pg: PrivatePostgres,
    pub valkey: PrivateValkey,
    pub s3_endpoint: String,
    pub secrets_endpoint: String,
    /// The secret as `CreateDatabase=true` leaves it: RDS's JSON.
    pub rds_json_secret: String,
    /// A URL secret, as a user of an existing database stores it.
    pub url_secret: String,
    /// The S3 server's files, removed when the stack is dropped.
    _s3_root: ScratchDir,
    s3_server: tokio::task::JoinHandle<anyhow::Result<()>>,
    moto: tokio::process::Child,
}

impl Stack {
    pub async fn start() -> Result<Self> {
        let certs = TestCerts::generate();
        let pg = PrivatePostgres::start(free_port(), Some(&certs));
        let valkey = PrivateValkey::start_tls(free_port(), &certs);

        // The stack's database is `quiver`, as the template's DatabaseSecret names it.
        let admin =
            quiver::pg::Pg::connect_lazy(&pg.url("sslmode=require"), 1, Duration::from_secs(10))?;
        admin
            .connection()
            .await?
            .batch_execute("CREATE DATABASE quiver")
            .await
            .context("creating database quiver")?;

        let s3_root = ScratchDir::new("rehearsal-s3");
        let s3_port = free_port();
        let root = s3_root.0.clone();
        let s3_server = tokio::spawn(async move {
            crate::s3server::run(&root, &format!("127.0.0.1:{s3_port}")).await
        });
        let s3_endpoint = format!("http://127.0.0.1:{s3_port}");
        wait_for_port(s3_port, "the embedded S3 server").await?;

        let moto_port = free_port();
        let moto = tokio::process::Command::new(moto_server()?)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting moto_server (pip install 'moto[server]'; local/bootstrap.sh installs it)",
            )?;
        let secrets_endpoint = format!("http://127.0.0.1:{moto_port}");
        wait_for_port(moto_port, "moto_server").await?;

        let password = PrivatePostgres::PASSWORD;
        let rds_json = serde_json::json!({
            "engine": "postgres", "username": "quiver", "password": password, "host": "localhost",
            "port": pg.port, "dbname": "quiver", "dbInstanceIdentifier": "quiver-rehearsal"
        })
        .to_string();
        let url =
            format!("postgres://quiver:{password}@localhost:{}/quiver?sslmode=require", pg.port);
        let client = secrets_client(&secrets_endpoint).await?;
        let rds_json_secret = create_secret(&client, "quiver-rehearsal-rds", &rds_json).await?;
        let url_secret = create_secret(&client, "quiver-rehearsal-url", &url).await?;
        Ok(Stack {
            certs,
            _pg: pg,
            valkey,
            s3_endpoint,
            secrets_endpoint,
            rds_json_secret,
            url_secret,
            _s3_root: s3_root,
            s3_server,
            moto,
        })
    }

    /// The migration step in process, on the stack's database (for a run without `snapshot`,
    /// which otherwise runs it as the deploy does).
    pub async fn migrate(&self) -> Result<()> {
        let url = self._pg.url("sslmode=require").replace("/postgres?", "/quiver?");
        let pg = quiver::pg::Pg::connect_lazy(&url, 1, Duration::from_secs(10))?;
        quiver::migrate::run(&pg).await?;
        Ok(())
    }

    /// Creates an empty bucket for one pass: each pass deploys into a stack with no snapshot and no
    /// index yet.
    pub async fn new_bucket(&self, name: &str) -> Result<()> {
        let vars: std::collections::HashMap<String, String> = [
            ("QUIVER_BUCKET", name),
            ("AWS_ENDPOINT_URL_S3", self.s3_endpoint.as_str()),
            ("AWS_REGION", REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s3 = quiver::storage::Storage::new(&quiver::Config::from_vars(&vars)?).await?;
        s3.client.create_bucket().bucket(name).send().await.map_err(|e| {
            anyhow::anyhow!("{}", quiver::storage::s3_error("CreateBucket", name, e))
        })?;
        Ok(())
    }

    /// What the template's resources stand for here, by `Ref` or `GetAtt` name.
    pub fn resources(&self, bucket: &str) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("AWS::StackName", "quiver".to_string()),
            ("AWS::Region", REGION.to_string()),
            ("AWS::AccountId", "123456789012".to_string()),
            ("AWS::Partition", "aws".to_string()),
            ("Bucket", bucket.to_string()),
            ("Bucket.Arn", format!("arn:aws:s3:::{bucket}")),
            // ElastiCache's endpoint: its certificate names `localhost`.
            ("Cache.Endpoint.Address", "localhost".to_string()),
            ("Cache.Endpoint.Port", self.valkey.port.to_string()),
            // `!Ref` of a SecretTargetAttachment is the secret's ARN.
            ("DatabaseSecretAttachment", self.rds_json_secret.clone()),
            ("DatabaseSecret", self.rds_json_secret.clone()),
        ])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.s3_server.abort();
        let _ = self.moto.start_kill();
    }
}

/// `moto_server` on PATH, or in the venv that local/bootstrap.sh makes.
fn moto_server() -> Result<std::path::PathBuf> {
    let venv = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/quiver/venv/bin/moto_server"));
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("moto_server"))
        .chain(venv)
        .find(|p| p.is_file())
        .context("moto_server not found: pip install 'moto[server]' (local/bootstrap.sh installs it into ~/.cache/quiver/venv)")
}

async fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not listen on 127.0.0.1:{port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A client of moto's Secrets Manager, with the credentials the functions get (moto takes any).
async fn secrets_client(endpoint: &str) -> Result<aws_sdk_secretsmanager::Client> {
    let (key, secret) =
        (crate::env::var("AWS_ACCESS_KEY_ID")?, crate::env::var("AWS_SECRET_ACCESS_KEY")?);
    let creds =
        aws_sdk_secretsmanager::config::Credentials::new(key, secret, None, None, "rehearsal");
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await;
    Ok(aws_sdk_secretsmanager::Client::new(&shared))
}

/// Stores `value` under `name` and returns the secret's ARN.
async fn create_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
) -> Result<String> {
    let out = client.create_secret().name(name).secret_string(value).send().await.map_err(|e| {
        anyhow::anyhow!(
            "CreateSecret {name} in moto: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
        )
    })?;
    out.arn().map(str::to_string).context("moto returned no ARN")
}
