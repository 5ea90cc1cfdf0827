//! `quiver-local rehearse`: every function run the way `infra/template.yaml` deploys it, before a
//! deploy can find out the hard way.
//!
//! - **Environment.** Each process starts with an empty environment, then gets what the template
//!   gives the function (`Globals` merged under its own `Environment.Variables`, read from the
//!   template itself), what the Lambda service sets (name, memory from `MemorySize`, the runtime
//!   API, region, temporary credentials, log format), and the endpoint overrides that point the
//!   AWS SDK at local stand-ins (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`), plus
//!   `QUIVER_VALKEY_CA_FILE`, since the local Valkey's certificate is not from a public CA as
//!   ElastiCache's is. Nothing else from `local/.env.local` is passed.
//! - **Services** ([`stack`]): TLS-only PostgreSQL and Valkey, and moto's server for S3 (a new
//!   bucket per pass) and Secrets Manager. Pass `rds-json` deploys with `CreateDatabase=true` (the
//!   RDS JSON secret), pass `url` with `CreateDatabase=false` and a URL secret.
//! - **IAM** ([`iam`]): moto enforces IAM on every request. Each function runs with the temporary
//!   credentials of a role that holds exactly its `Policies` from the template, so a missing
//!   action is refused here, and the refusal fails the rehearsal even when the function only logs
//!   it (a retention delete, say).
//! - **Runtime.** Each binary runs against its own Runtime API ([`crate::runtime_api`]) and gets
//!   the events Lambda would send ([`events`]): an HTTP API event and, where the function has a
//!   URL, a Function URL event for every operation of the OpenAPI document, and the schedule's
//!   EventBridge event. With `--zips`, the arm64 zips of `make build` run under `qemu-aarch64`.
//!
//! A failed init, a crash, a timeout, a reported error, a non-2xx answer or a request IAM refused
//! fails the rehearsal, naming the function, the event or the action, and the reason.

mod events;
mod iam;
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use events::{Door, Step};
use serde_json::Value;
use stack::Stack;

use crate::template::{Deployment, Function, Template};

/// Lambda's limit on a response payload.
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Lambda's limit on init for on-demand functions.
const INIT_LIMIT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Rehearse the arm64 zips in this directory (`<name>/bootstrap.zip`, what `make build` leaves
    /// in target/lambda) under qemu-aarch64, instead of the x86-64 dev binaries.
    #[arg(long)]
    pub zips: Option<PathBuf>,
    /// Only these functions (repeatable); the script's steps for the others are skipped.
    #[arg(long)]
    pub only: Vec<String>,
    /// Only this pass: `rds-json` (CreateDatabase=true) or `url` (an existing database's URL secret).
    #[arg(long)]
    pub pass: Option<String>,
    /// Rehearse this template instead of infra/template.yaml: a copy with a policy narrowed, for
    /// example, to see which function needs what.
    #[arg(long)]
    pub template: Option<PathBuf>,
}

/// The two ways the template can be deployed, by the shape of the database secret.
const PASSES: [&str; 2] = ["rds-json", "url"];

pub async fn run(opts: Options) -> Result<()> {
    let root = crate::env::repo_root();
    let template = match &opts.template {
        Some(path) => Template::load_file(path)?,
        None => Template::load(&root)?,
    };
    let functions = template.functions();
    let chosen: BTreeSet<String> = if opts.only.is_empty() {
        functions.keys().cloned().collect()
    } else {
        opts.only.iter().cloned().collect()
    };
    if let Some(unknown) = chosen.iter().find(|n| !functions.contains_key(*n)) {
        bail!("infra/template.yaml deploys no function {unknown}");
    }
    let routes = template.api_routes();
    check_coverage(&template, &routes)?;

    let work = quiver::testing::ScratchDir::new("rehearsal");
    let emulate = opts.zips.is_some();
    let mut binaries = BTreeMap::new();
    for name in &chosen {
        let dir = work.0.join(name);
        std::fs::create_dir_all(&dir)?;
        match &opts.zips {
            Some(zips) => unzip(&zips.join(name).join("bootstrap.zip"), &dir)?,
            None => {
                crate::build::task_root(&crate::build::function_alone(name, false)?, &dir)?;
            }
        }
        binaries.insert(name.clone(), dir);
    }
    // qemu runs the arm64 code several times slower; Lambda's limits are scaled to match.
    let slowdown = if emulate { 10 } else { 1 };

    let stack = Stack::start().await?;
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for pass in PASSES.iter().filter(|p| opts.pass.as_deref().is_none_or(|only| only == **p)) {
        let bucket = format!("quiver-rehearsal-{pass}");
        stack.new_bucket(&bucket).await?;
        let resources: Vec<(&str, String)> = stack.resources(&bucket).into_iter().collect();
        let resources: Vec<(&str, &str)> =
            resources.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let params: Vec<(&str, &str)> = match *pass {
            "rds-json" => vec![("CreateDatabase", "true")],
            _ => {
                vec![("CreateDatabase", "false"), ("DatabaseSecretArn", stack.url_secret.as_str())]
            }
        };
        let deployment = Deployment::new(&template, &params, &resources)?;
        let roles = roles(&deployment, &chosen, pass)?;
        let granted = stack.moto.grant(&roles).await?;
        let creds: BTreeMap<&String, &iam::Credentials> =
            chosen.iter().zip(roles.iter().map(|(role, _, _)| &granted[role])).collect();
        let denials_before = stack.moto.denials(0)?.len();
        eprintln!("rehearse: pass {pass}: starting {} functions", chosen.len());

        let mut instances = BTreeMap::new();
        let starts = chosen.iter().map(|name| {
            let f = &functions[name];
            let dir = &binaries[name];
            Instance::start(name, f, &deployment, &stack, creds[name], dir, emulate, slowdown, pass)
        });
        for (name, started) in chosen.iter().zip(futures::future::join_all(starts).await) {
            match started {
                Ok(i) => {
                    instances.insert(name.clone(), i);
                }
                Err(e) => failures.push(format!("[{pass}] {name}: init: {e:#}")),
            }
        }

        let mut n = 0;
        for step in events::script(pass) {
            let (function, doors, label) = match &step {
                Step::Http(req) => {
                    let function = routes[req.route].clone();
                    let mut doors = vec![Door::Api];
                    if !functions[&function].props["FunctionUrlConfig"].is_null() {
                        doors.push(Door::FunctionUrl);
                    }
                    (
                        function,
                        doors,
                        format!("{} {}", req.route.split(' ').next().unwrap_or(""), req.target),
                    )
                }
                Step::Schedule(function) => {
                    (function.to_string(), vec![], "EventBridge Scheduled Event".to_string())
                }
                Step::Migrate => ("snapshot".to_string(), vec![], "migration step".to_string()),
            };
            if matches!(step, Step::Migrate) && !instances.contains_key(&function) {
                if let Err(e) = stack.migrate().await {
                    failures.push(format!("[{pass}] migration step (in process): {e:#}"));
                }
                continue;
            }
            if !chosen.contains(&function) {
                continue;
            }
            let Some(instance) = instances.get_mut(&function) else { continue };
            let calls: Vec<(String, Value)> = match &step {
                Step::Http(req) => doors
                    .iter()
                    .map(|door| {
                        n += 1;
                        (format!("{label} through the {door}"), events::http_event(req, *door, n))
                    })
                    .collect(),
                Step::Schedule(f) => {
                    n += 1;
                    vec![(label, events::scheduled_event(f, n))]
                }
                Step::Migrate => vec![(label, events::migrate_event())],
            };
            for (what, event) in calls {
                let http = matches!(step, Step::Http(_));
                if let Err(e) = instance.call(&event, http).await {
                    failures.push(format!(
                        "[{pass}] {function}: {what}: {e:#}\n{}",
                        instance.log_tail(12)
                    ));
                }
            }
        }
        for (name, mut instance) in instances {
            summary.push(format!(
                "  {pass:<9} {name:<13} init {:>8.1} ms   {:>2} of {:>2} invocations answered",
                instance.init_ms, instance.ok, instance.calls
            ));
            instance.stop().await;
        }
        failures.extend(refused(&stack.moto.denials(denials_before)?, &creds, &functions, pass));
    }
    drop(stack);

    let ran = if emulate { "arm64 zips under qemu-aarch64" } else { "x86-64 dev binaries" };
    eprintln!("rehearse: {ran} (environment and IAM policies from infra/template.yaml, S3 and secrets from moto with IAM enforced, TLS-only PostgreSQL and Valkey)");
    for line in &summary {
        eprintln!("{line}");
    }
    if !failures.is_empty() {
        bail!("the rehearsal failed {} time(s):\n\n{}", failures.len(), failures.join("\n\n"));
    }
    eprintln!("rehearse: every function started and answered every event, and IAM refused none of their requests");
    Ok(())
}

/// `(role, session, policy)` for each function: the role Lambda would assume for it in this pass,
/// holding the policy its template `Policies` give.
fn roles(
    d: &Deployment<'_>,
    chosen: &BTreeSet<String>,
    pass: &str,
) -> Result<Vec<(String, String, Value)>> {
    let functions = d.template.functions();
    chosen
        .iter()
        .map(|name| {
            let policy = d.policy(&functions[name]).with_context(|| format!("{name}'s policy"))?;
            Ok((format!("quiver-{pass}-{name}"), format!("quiver-{name}"), policy))
        })
        .collect()
}

/// One failure per function and action that IAM refused, whatever the function made of it.
fn refused(
    denials: &[iam::Denial],
    creds: &BTreeMap<&String, &iam::Credentials>,
    functions: &BTreeMap<String, Function<'_>>,
    pass: &str,
) -> Vec<String> {
    let mut by_caller: BTreeMap<(String, &str, &str), (usize, &str)> = BTreeMap::new();
    for d in denials {
        let caller = creds
            .iter()
            .find(|(_, c)| c.key == d.access_key)
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| format!("an unknown caller ({})", d.access_key));
        let key = (caller, d.action.as_str(), d.resource.as_str());
        by_caller.entry(key).or_insert((0, d.error.as_str())).0 += 1;
    }
    by_caller
        .into_iter()
        .map(|((caller, action, resource), (times, error))| {
            let what = format!(
                "[{pass}] {caller}: IAM refused {action} on {resource} ({times}x, {error})"
            );
            match functions.get(&caller) {
                Some(f) if error.contains("AccessDenied") => {
                    format!("{what}: the Policies of {} in the template do not grant it", f.id)
                }
                _ => format!("{what}: the rehearsal's credentials are at fault, not the template"),
            }
        })
        .collect()
}

/// Every operation of the OpenAPI document is reachable through an HTTP API route and has a
/// request in the script, and every scheduled function has a schedule step.
fn check_coverage(template: &Template, routes: &BTreeMap<String, String>) -> Result<()> {
    let doc = serde_json::to_value(crate::serve::openapi())?;
    let script = events::script("check");
    let requested: BTreeSet<&str> = script
        .iter()
        .filter_map(|s| match s {
            Step::Http(r) => Some(r.route),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for method in ops.as_object().into_iter().flatten().map(|(m, _)| m.to_uppercase()) {
            let op = format!("{method} {path}");
            if !routes.contains_key(&op) {
                problems.push(format!("{op} is in the OpenAPI document, but infra/template.yaml has no HTTP API route for it"));
            }
            if !requested.contains(op.as_str()) {
                problems.push(format!(
                    "{op} has no request in the rehearsal's script (local/src/rehearse/events.rs)"
                ));
            }
        }
    }
    let scheduled: BTreeSet<&str> = script
        .iter()
        .filter_map(|s| match s {
            Step::Schedule(f) => Some(*f),
            _ => None,
        })
        .collect();
    for (name, f) in template.functions() {
        let has_schedule = f.props["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, e)| e["Type"] == "Schedule");
        if has_schedule && !scheduled.contains(name.as_str()) {
            problems.push(format!("{name} is scheduled in infra/template.yaml, but the rehearsal's script never fires its schedule"));
        }
    }
    if !problems.is_empty() {
        bail!("the rehearsal does not cover the deployment:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn unzip(zip: &Path, dir: &Path) -> Result<()> {
    let status = std::process::Command::new("unzip")
        .args(["-q", "-o"])
        .arg(zip)
        .arg("-d")
        .arg(dir)
        .status()
        .context("running unzip (apt-get install unzip)")?;
    if !status.success() {
        bail!("unzip {} failed ({status}); run `make build` first", zip.display());
    }
    Ok(())
}

/// One function's process and its Runtime API: one warm Lambda instance.
struct Instance {
    child: tokio::process::Child,
    api: crate::runtime_api::RuntimeApi,
    log: PathBuf,
    timeout: Duration,
    init_ms: f64,
    calls: usize,
    ok: usize,
}

impl Instance {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        name: &str,
        f: &Function<'_>,
        d: &Deployment<'_>,
        stack: &Stack,
        creds: &iam::Credentials,
        dir: &Path,
        emulate: bool,
        slowdown: u32,
        pass: &str,
    ) -> Result<Self> {
        let memory = d.number(f, "MemorySize")?;
        let timeout = Duration::from_secs(d.number(f, "Timeout")?) * slowdown;
        let api = crate::runtime_api::RuntimeApi::start(name).await?;
        let mut env = d.environment(f)?;
        let logging = |key| d.value(d.template.property(f, &["LoggingConfig", key]));
        let log_format = logging("LogFormat")?.unwrap_or_else(|| "Text".into());
        let log_level = logging("ApplicationLogLevel")?;
        let task_root = dir.to_string_lossy().into_owned();
        // What the Lambda service sets in every provided.al2023 instance (no HOME among them).
        let service: Vec<(&str, String)> = vec![
            ("AWS_LAMBDA_FUNCTION_NAME", format!("quiver-{name}")),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/quiver-{name}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/29/[$LATEST]rehearsal".into()),
            ("AWS_LAMBDA_LOG_FORMAT", log_format),
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            ("AWS_REGION", stack::REGION.into()),
            ("AWS_DEFAULT_REGION", stack::REGION.into()),
            // The function's role, assumed as Lambda assumes it: its policy is all it may do.
            ("AWS_ACCESS_KEY_ID", creds.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", creds.secret.clone()),
            ("AWS_SESSION_TOKEN", creds.token.clone().unwrap_or_default()),
            ("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.1:2000".into()),
            ("AWS_XRAY_CONTEXT_MISSING", "LOG_ERROR".into()),
            ("_HANDLER", "bootstrap".into()),
            ("LAMBDA_TASK_ROOT", task_root.clone()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
            ("LANG", "en_US.UTF-8".into()),
            ("TZ", ":UTC".into()),
            ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
            ("LD_LIBRARY_PATH", format!("/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:{task_root}:{task_root}/lib:/opt/lib")),
            // The endpoints of the local stand-ins for S3 and Secrets Manager: both moto.
            ("AWS_ENDPOINT_URL_S3", stack.moto.endpoint.clone()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", stack.moto.endpoint.clone()),
            // ElastiCache's certificate chains to a public root; the local one to a throwaway CA.
            ("QUIVER_VALKEY_CA_FILE", stack.certs.ca.to_string_lossy().into_owned()),
        ];
        for (k, v) in service {
            env.insert(k.to_string(), v);
        }
        if let Some(level) = log_level {
            env.insert("AWS_LAMBDA_LOG_LEVEL".into(), level);
        }

        let log = dir.join(format!("{pass}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = if emulate {
            let mut c = tokio::process::Command::new("qemu-aarch64");
            c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(dir.join("bootstrap"));
            c
        } else {
            tokio::process::Command::new(dir.join("bootstrap"))
        };
        let spawned = Instant::now();
        let mut child = cmd
            .env_clear()
            .envs(&env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", dir.join("bootstrap").display()))?;
        let ready = tokio::select! {
            ready = api.ready(INIT_LIMIT * slowdown) => ready,
            status = child.wait() => Err(anyhow::anyhow!("exited during init ({})", status.map(|s| s.to_string()).unwrap_or_default())),
        };
        match ready {
            Ok(at) => Ok(Instance {
                child,
                api,
                log,
                timeout,
                init_ms: (at - spawned).as_secs_f64() * 1e3,
                calls: 0,
                ok: 0,
            }),
            Err(e) => {
                let _ = child.kill().await;
                bail!("{e:#}\n{}", tail(&log, 20))
            }
        }
    }

    /// One invocation: an HTTP event must be answered with a 2xx response Lambda can return; a
    /// scheduled event must not end in an error.
    async fn call(&mut self, event: &Value, http: bool) -> Result<()> {
        self.calls += 1;
        let outcome = tokio::select! {
            outcome = self.api.invoke(event.to_string(), self.timeout) => outcome?,
            status = self.child.wait() => bail!("the process exited ({})", status.map(|s| s.to_string()).unwrap_or_default()),
        };
        let body = match outcome {
            crate::runtime_api::Outcome::Response(body) => body,
            crate::runtime_api::Outcome::Error(body) => {
                bail!("the function reported an error: {}", snippet(&body))
            }
        };
        if body.len() > MAX_RESPONSE_BYTES {
            bail!("a response of {} bytes is over Lambda's 6 MB limit", body.len());
        }
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("the response is not JSON: {}", snippet(&body)))?;
        if http {
            check_http_response(&answer)?;
        }
        self.ok += 1;
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A payload 2.0 response: a 2xx status, and a body that decodes (base64 when it says so) and,
/// unless compressed, parses as the JSON its content type announces.
fn check_http_response(answer: &Value) -> Result<()> {
    let status = answer["statusCode"].as_u64().context("the response has no statusCode")?;
    let raw = answer["body"].as_str().unwrap_or("");
    let header = |name: &str| answer["headers"][name].as_str().unwrap_or("").to_string();
    let body = if answer["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .context("isBase64Encoded, but the body is not base64")?
    } else {
        raw.as_bytes().to_vec()
    };
    if !(200..300).contains(&status) {
        let shown = if header("content-encoding").is_empty() {
            snippet(&String::from_utf8_lossy(&body))
        } else {
            format!("({} bytes, {})", body.len(), header("content-encoding"))
        };
        bail!("answered {status}: {shown}");
    }
    if header("content-encoding").is_empty() && header("content-type").contains("json") {
        serde_json::from_slice::<Value>(&body).with_context(|| {
            format!(
                "the {} body is not JSON: {}",
                header("content-type"),
                snippet(&String::from_utf8_lossy(&body))
            )
        })?;
    }
    Ok(())
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 400 {
        return s.to_string();
    }
    let cut = (0..=400).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &s[..cut])
}

/// The last `lines` lines of a function's log, indented, for a failure report.
fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let shown = &all[all.len().saturating_sub(lines)..];
    if shown.is_empty() {
        return "    (the function logged nothing)".into();
    }
    shown.iter().map(|l| format!("    | {}", snippet(l))).collect::<Vec<_>>().join("\n")
}
