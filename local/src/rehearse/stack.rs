//! The stack the rehearsal deploys into, on this machine and private to one run: PostgreSQL that
//! accepts TLS only (as RDS with `rds.force_ssl=1`), Valkey that speaks TLS only (as ElastiCache
//! Serverless), and moto's server with IAM enforced ([`super::iam`]) for S3 (a new bucket per
//! pass) and Secrets Manager (the database secret in both shapes the template supports).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver::testing::{free_port, PrivatePostgres, PrivateValkey, ScratchDir, TestCerts};

use super::iam::Moto;

pub const REGION: &str = "us-east-1";

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    pub certs: TestCerts,
    /// Runs until the stack is dropped; the functions reach it through the secrets.
    _pg: PrivatePostgres,
    pub valkey: PrivateValkey,
    /// S3, Secrets Manager, IAM and STS, at `moto.endpoint`.
    pub moto: Moto,
    /// The secret as `CreateDatabase=true` leaves it: RDS's JSON.
    pub rds_json_secret: String,
    /// A URL secret, as a user of an existing database stores it.
    pub url_secret: String,
    /// moto's launcher, admin key, log and denial log; dropped after moto (fields drop in order).
    _moto_dir: ScratchDir,
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

        let moto_dir = ScratchDir::new("rehearsal-moto");
        let moto = Moto::start(&moto_dir.0, free_port()).await?;

        let password = PrivatePostgres::PASSWORD;
        let rds_json = serde_json::json!({
            "engine": "postgres", "username": "quiver", "password": password, "host": "localhost",
            "port": pg.port, "dbname": "quiver", "dbInstanceIdentifier": "quiver-rehearsal"
        })
        .to_string();
        let url =
            format!("postgres://quiver:{password}@localhost:{}/quiver?sslmode=require", pg.port);
        let client = aws_sdk_secretsmanager::Client::new(&moto.admin_config().await);
        let rds_json_secret = create_secret(&client, "quiver-rehearsal-rds", &rds_json).await?;
        let url_secret = create_secret(&client, "quiver-rehearsal-url", &url).await?;
        Ok(Stack { certs, _pg: pg, valkey, moto, rds_json_secret, url_secret, _moto_dir: moto_dir })
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
        let config = aws_sdk_s3::config::Builder::from(&self.moto.admin_config().await)
            .force_path_style(true)
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(config);
        s3.create_bucket().bucket(name).send().await.map_err(|e| {
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

/// Waits until something listens on `port`.
pub async fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not listen on 127.0.0.1:{port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
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
