//! IAM, enforced: moto's server checks every request to S3 and Secrets Manager against the
//! policies of the caller's role, so a policy in `infra/template.yaml` that lacks an action fails
//! the rehearsal, naming the function and the action, instead of failing first in AWS.
//!
//! moto runs through `moto_iam.py` (beside this file, written out at start): IAM is enforced from
//! the first request (`INITIAL_NO_AUTH_ACTION_COUNT=0`), an admin user is created in-process to
//! set the stack up, and every refusal is logged with the caller's key, the action and the
//! resource. Each function gets a role holding exactly its template policy
//! ([`crate::template::Deployment::policy`]) and runs with that role's temporary credentials, as
//! on Lambda. What moto does and does not check is listed in `moto_iam.py` and in the README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// moto's own launcher; see its module docstring.
const LAUNCHER: &str = include_str!("moto_iam.py");

/// Access keys, with the session token of an assumed role.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub key: String,
    pub secret: String,
    pub token: Option<String>,
}

/// One request that IAM refused.
#[derive(Debug)]
pub struct Denial {
    pub access_key: String,
    pub action: String,
    pub resource: String,
    pub error: String,
}

/// moto's server with IAM enforced; stopped when dropped.
pub struct Moto {
    pub endpoint: String,
    /// Allowed everything: sets up buckets, secrets and roles.
    pub admin: Credentials,
    admin_arn: String,
    python: PathBuf,
    launcher: PathBuf,
    denials: PathBuf,
    child: tokio::process::Child,
}

impl Moto {
    /// Starts moto on `port`, keeping its launcher, admin key and denial log in `dir`.
    pub async fn start(dir: &Path, port: u16) -> Result<Self> {
        let python = moto_python()?;
        let launcher = dir.join("moto_iam.py");
        std::fs::write(&launcher, LAUNCHER)
            .with_context(|| format!("writing {}", launcher.display()))?;
        let (admin_file, denials) = (dir.join("moto-admin.json"), dir.join("moto-denials.jsonl"));
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let child = tokio::process::Command::new(&python)
            .arg(&launcher)
            .args(["serve", "127.0.0.1", &port.to_string()])
            .args([&admin_file, &denials])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), launcher.display()))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        if let Err(e) = super::stack::wait_for_port(port, "moto_server (moto_iam.py)").await {
            let log = std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default();
            bail!("{e:#}\n{log}");
        }
        // The launcher writes the admin's key before it serves.
        let admin: Value = serde_json::from_str(
            &std::fs::read_to_string(&admin_file)
                .with_context(|| format!("moto_iam.py left no {}", admin_file.display()))?,
        )?;
        let text = |k: &str| admin[k].as_str().map(str::to_string).context("moto's admin key");
        Ok(Moto {
            endpoint,
            admin: Credentials { key: text("key")?, secret: text("secret")?, token: None },
            admin_arn: text("arn")?,
            python,
            launcher,
            denials,
            child,
        })
    }

    /// An SDK config that signs as the admin, for the stack's own setup.
    pub async fn admin_config(&self) -> aws_config::SdkConfig {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.admin.key,
            &self.admin.secret,
            None,
            None,
            "moto admin",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(super::stack::REGION))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// Creates one role per `(role name, session name, policy)`, each holding only that policy, and
    /// returns each role's temporary credentials, by role name.
    pub async fn grant(
        &self,
        roles: &[(String, String, Value)],
    ) -> Result<BTreeMap<String, Credentials>> {
        let spec = json!({
            "admin": {"key": self.admin.key, "secret": self.admin.secret, "arn": self.admin_arn},
            "roles": roles.iter().map(|(name, session, policy)| json!({"name": name, "session": session, "policy": policy})).collect::<Vec<_>>(),
        });
        let mut child = tokio::process::Command::new(&self.python)
            .arg(&self.launcher)
            .args(["grant", &self.endpoint])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running moto_iam.py grant")?;
        let mut stdin = child.stdin.take().expect("piped");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, spec.to_string().as_bytes()).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "creating the functions' roles in moto failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let granted: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout)
            .context("moto_iam.py grant printed no credentials")?;
        granted
            .into_iter()
            .map(|(role, c)| {
                let text = |k: &str| {
                    c[k].as_str().map(str::to_string).with_context(|| format!("{role}: {k}"))
                };
                let creds = Credentials {
                    key: text("key")?,
                    secret: text("secret")?,
                    token: Some(text("token")?),
                };
                Ok((role, creds))
            })
            .collect()
    }

    /// The refusals logged so far, from the `from`-th on: a pass reads its own.
    pub fn denials(&self, from: usize) -> Result<Vec<Denial>> {
        let text = match std::fs::read_to_string(&self.denials) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| self.denials.display().to_string()),
        };
        text.lines()
            .skip(from)
            .map(|line| {
                let d: Value = serde_json::from_str(line)
                    .with_context(|| format!("moto's denial log: {line}"))?;
                let text = |k: &str| d[k].as_str().unwrap_or("?").to_string();
                Ok(Denial {
                    access_key: text("access_key"),
                    action: text("action"),
                    resource: text("resource"),
                    error: text("error"),
                })
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The Python that has moto: the interpreter named by `moto_server`'s first line (the venv that
/// local/bootstrap.sh makes, or wherever pip put it).
fn moto_python() -> Result<PathBuf> {
    let server = moto_server()?;
    let text = std::fs::read_to_string(&server)
        .with_context(|| format!("reading {}", server.display()))?;
    let shebang = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .with_context(|| format!("{} has no #! line naming its Python", server.display()))?;
    // `#!/usr/bin/env python3` names it through env.
    let mut words = shebang.split_whitespace();
    let first = words.next().unwrap_or_default();
    let python = if first.ends_with("/env") { words.next().unwrap_or_default() } else { first };
    Ok(PathBuf::from(python))
}

/// `moto_server` on PATH, or in the venv that local/bootstrap.sh makes.
fn moto_server() -> Result<PathBuf> {
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/quiver/venv/bin/moto_server"));
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("moto_server"))
        .chain(venv)
        .find(|p| p.is_file())
        .context("moto_server not found: pip install 'moto[server]' (local/bootstrap.sh installs it into ~/.cache/quiver/venv)")
}
