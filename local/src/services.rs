//! `quiver-local up | down | status`: PostgreSQL, Valkey and S3 on the ports `local/.env.local`
//! names. With a running Docker engine this is `docker compose`; without one (CI, this VM) the
//! same services start natively from the system's binaries and the embedded S3 server.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::env;

/// How long each service gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The addresses and credentials the functions will use, taken from the environment.
pub struct Targets {
    pub database_url: String,
    pub pg_addr: SocketAddr,
    pub pg_user: String,
    pub pg_password: String,
    pub pg_db: String,
    pub valkey_url: String,
    pub valkey_addr: SocketAddr,
    pub s3_endpoint: String,
    pub s3_addr: SocketAddr,
    pub bucket: String,
}

fn addr_of(var: &str, url: &str) -> Result<SocketAddr> {
    let u = url::Url::parse(url).with_context(|| format!("{var} is not a URL"))?;
    let host = u.host_str().ok_or_else(|| anyhow!("{var} has no host"))?;
    let port = u.port_or_known_default().ok_or_else(|| anyhow!("{var} has no port"))?;
    (host, port).to_socket_addrs()?.next().ok_or_else(|| anyhow!("{var}: {host} does not resolve"))
}

impl Targets {
    pub fn from_env() -> Result<Self> {
        let database_url = env::var("QUIVER_DATABASE_URL")?;
        let u = url::Url::parse(&database_url).context("QUIVER_DATABASE_URL is not a URL")?;
        let valkey_url = env::var("QUIVER_VALKEY_URL")?;
        let s3_endpoint = env::var("AWS_ENDPOINT_URL_S3")?;
        Ok(Targets {
            pg_addr: addr_of("QUIVER_DATABASE_URL", &database_url)?,
            pg_user: u.username().to_string(),
            pg_password: u.password().unwrap_or("").to_string(),
            pg_db: u.path().trim_start_matches('/').to_string(),
            database_url,
            valkey_addr: addr_of("QUIVER_VALKEY_URL", &valkey_url)?,
            valkey_url,
            s3_addr: addr_of("AWS_ENDPOINT_URL_S3", &s3_endpoint)?,
            s3_endpoint,
            bucket: env::var("QUIVER_BUCKET")?,
        })
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn wait_for(name: &str, addr: SocketAddr, log: Option<&Path>) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < START_TIMEOUT {
        if answers(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let hint = log.map(|l| format!("; see {}", l.display())).unwrap_or_default();
    bail!("{name} did not answer on {addr} within {}s{hint}", START_TIMEOUT.as_secs())
}

fn docker_engine() -> bool {
    if std::env::var("QUIVER_NATIVE").is_ok_and(|v| v == "1") {
        return false;
    }
    let Ok(mut child) = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    false
}

fn compose(args: &[&str]) -> Result<()> {
    let file = env::repo_root().join("local/docker-compose.yml");
    let status = Command::new("docker").arg("compose").arg("-f").arg(&file).args(args).status()?;
    if !status.success() {
        bail!("docker compose {} failed", args.join(" "));
    }
    Ok(())
}

fn mode_file() -> PathBuf {
    env::state_dir().join("mode")
}

/// One of the three local services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Postgres,
    Valkey,
    S3,
}

impl Service {
    fn compose_name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Valkey => "valkey",
            Service::S3 => "minio",
        }
    }
}

fn selected(only: Option<Service>) -> Vec<Service> {
    match only {
        Some(s) => vec![s],
        None => vec![Service::Postgres, Service::Valkey, Service::S3],
    }
}

/// Starts every service (or just `only`) and waits until each answers; idempotent.
pub async fn up(only: Option<Service>) -> Result<()> {
    let t = Targets::from_env()?;
    let which = selected(only);
    std::fs::create_dir_all(env::state_dir())?;
    if docker_engine() {
        println!("Docker engine found: starting local/docker-compose.yml");
        let mut args = vec!["up", "-d", "--wait"];
        args.extend(which.iter().map(|s| s.compose_name()));
        if which.contains(&Service::S3) {
            args.push("createbucket");
        }
        compose(&args)?;
        std::fs::write(mode_file(), "docker")?;
    } else {
        println!(
            "No Docker engine: starting the services natively (state in {})",
            env::state_dir().display()
        );
        for s in &which {
            match s {
                Service::Postgres => start_postgres(&t)?,
                Service::Valkey => start_valkey(&t)?,
                Service::S3 => start_s3(&t)?,
            }
        }
        std::fs::write(mode_file(), "native")?;
    }
    for s in &which {
        match s {
            Service::Postgres => {
                wait_for("PostgreSQL", t.pg_addr, None)?;
                ensure_database(&t).await?;
                println!("postgres  {}", redact(&t.database_url));
            }
            Service::Valkey => {
                wait_for("Valkey", t.valkey_addr, None)?;
                println!("valkey    {}", t.valkey_url);
            }
            Service::S3 => {
                wait_for("S3", t.s3_addr, None)?;
                ensure_bucket(&t).await?;
                println!("s3        {} (bucket {})", t.s3_endpoint, t.bucket);
            }
        }
    }
    Ok(())
}

/// Stops every service (or just `only`) that `up` started.
pub async fn down(only: Option<Service>) -> Result<()> {
    let t = Targets::from_env()?;
    let which = selected(only);
    if std::fs::read_to_string(mode_file()).is_ok_and(|m| m.trim() == "docker") {
        match only {
            None => compose(&["down"])?,
            Some(s) => compose(&["stop", s.compose_name()])?,
        }
    } else {
        for s in &which {
            match s {
                Service::Postgres => stop_postgres()?,
                Service::Valkey => {
                    stop_pidfile("valkey", &env::state_dir().join("valkey.pid"), t.valkey_addr)?
                }
                Service::S3 => stop_pidfile("s3", &env::state_dir().join("s3.pid"), t.s3_addr)?,
            }
        }
    }
    if only.is_none() {
        let _ = std::fs::remove_file(mode_file());
    }
    // A service this checkout did not start (another clone's, or one started by hand) is not
    // ours to stop; say so rather than report it stopped while it still answers.
    let still: Vec<String> = which
        .iter()
        .filter_map(|s| {
            let addr = match s {
                Service::Postgres => t.pg_addr,
                Service::Valkey => t.valkey_addr,
                Service::S3 => t.s3_addr,
            };
            answers(addr).then(|| format!("{} on {addr}", s.compose_name()))
        })
        .collect();
    anyhow::ensure!(
        still.is_empty(),
        "still answering (not started from {}): {}",
        env::state_dir().display(),
        still.join(", ")
    );
    println!("stopped {}", which.iter().map(|s| s.compose_name()).collect::<Vec<_>>().join(", "));
    Ok(())
}

pub async fn status() -> Result<()> {
    let t = Targets::from_env()?;
    let mut all = true;
    for (name, addr, url) in [
        ("postgres", t.pg_addr, redact(&t.database_url)),
        ("valkey", t.valkey_addr, t.valkey_url.clone()),
        ("s3", t.s3_addr, t.s3_endpoint.clone()),
    ] {
        let up = answers(addr);
        all &= up;
        println!("{name:<9} {:<5} {url}", if up { "up" } else { "down" });
    }
    if !all {
        bail!("some services are down; run `quiver-local up`");
    }
    Ok(())
}

/// A URL with its password replaced, for printing.
pub use quiver::config::redact;

// ---- PostgreSQL -------------------------------------------------------------------------------

use quiver::testing::is_root;

/// The directory of `initdb`, `pg_ctl` and `postgres`: PATH first, then Debian's layout.
fn pg_bindir() -> Result<PathBuf> {
    quiver::testing::pg_bindir().ok_or_else(|| {
        anyhow!("PostgreSQL server binaries (initdb, pg_ctl) not found: install them with `sudo apt-get install -y postgresql`")
    })
}

/// PostgreSQL refuses to run as root, so as root its data lives where the `postgres` user can reach it.
fn pg_dir() -> PathBuf {
    let state = env::state_dir();
    if is_root() {
        let tag = xxhash_rust::xxh3::xxh3_64(state.to_string_lossy().as_bytes());
        PathBuf::from(format!("/var/tmp/quiver-{tag:016x}"))
    } else {
        state.join("postgres")
    }
}

fn pg_command(bindir: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    }
}

fn run_quiet(mut c: Command, what: &str) -> Result<()> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn start_postgres(t: &Targets) -> Result<()> {
    if answers(t.pg_addr) {
        println!("postgres  already answering on {}", t.pg_addr);
        return Ok(());
    }
    let bindir = pg_bindir()?;
    let root = pg_dir();
    let data = root.join("data");
    std::fs::create_dir_all(&root)?;
    if is_root() {
        let ok =
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&root).status()?.success();
        if !ok {
            bail!("could not hand {} to the postgres user (is the `postgres` user there? `apt-get install -y postgresql` creates it)", root.display());
        }
    }
    if !data.join("PG_VERSION").exists() {
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, &t.pg_password)?;
        if is_root() {
            Command::new("chown").args(["postgres:postgres"]).arg(&pwfile).status()?;
        }
        let mut c = pg_command(&bindir, "initdb");
        c.arg("-D").arg(&data).args([
            "-U",
            &t.pg_user,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth=scram-sha-256",
        ]);
        c.arg(format!("--pwfile={}", pwfile.display()));
        run_quiet(c, "initdb")?;
        let _ = std::fs::remove_file(&pwfile);
    }
    let log = root.join("postgres.log");
    let opts = format!(
        "-p {} -c listen_addresses={} -k {} -c max_connections=200 -c shared_buffers=256MB",
        t.pg_addr.port(),
        t.pg_addr.ip(),
        root.display()
    );
    let mut c = pg_command(&bindir, "pg_ctl");
    c.arg("-D").arg(&data).arg("-l").arg(&log).args(["-w", "-t", "60", "-o", &opts, "start"]);
    run_quiet(c, "pg_ctl start").with_context(|| format!("see {}", log.display()))?;
    println!("postgres  started ({})", data.display());
    Ok(())
}

fn stop_postgres() -> Result<()> {
    let data = pg_dir().join("data");
    if !data.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut c = pg_command(&pg_bindir()?, "pg_ctl");
    c.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
    run_quiet(c, "pg_ctl stop")
}

async fn ensure_database(t: &Targets) -> Result<()> {
    let admin = {
        let mut u = url::Url::parse(&t.database_url)?;
        u.set_path("/postgres");
        u.to_string()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let client = loop {
        match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                break client;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting for postgres: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("PostgreSQL at {} refused us: {e}", redact(&admin)),
        }
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&t.pg_db])
        .await?
        .is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE \"{}\"", t.pg_db.replace('"', ""))).await?;
    }
    // The schema is part of "up": a fresh database is ready for the functions, the tests and psql.
    let pg = quiver::pg::Pg::new(&quiver::Config::from_env()?)?;
    quiver::migrate::run(&pg).await?;
    Ok(())
}

// ---- Valkey -----------------------------------------------------------------------------------

fn which(names: &[&str]) -> Option<PathBuf> {
    let paths: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let extra =
        [PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")];
    names
        .iter()
        .find_map(|n| paths.iter().chain(extra.iter()).map(|d| d.join(n)).find(|p| p.is_file()))
}

fn start_valkey(t: &Targets) -> Result<()> {
    if answers(t.valkey_addr) {
        println!("valkey    already answering on {}", t.valkey_addr);
        return Ok(());
    }
    let bin = which(&["valkey-server", "redis-server"])
        .ok_or_else(|| anyhow!("neither valkey-server nor redis-server found: install one with `sudo apt-get install -y redis-server`"))?;
    let state = env::state_dir();
    let log = state.join("valkey.log");
    let port = t.valkey_addr.port().to_string();
    let status = Command::new(&bin)
        .args(["--port", &port, "--bind", &t.valkey_addr.ip().to_string(), "--daemonize", "yes"])
        .arg("--pidfile")
        .arg(state.join("valkey.pid"))
        .arg("--logfile")
        .arg(&log)
        .arg("--dir")
        .arg(&state)
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "256mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ])
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !status.success() {
        bail!("{} failed to start; see {}", bin.display(), log.display());
    }
    wait_for("Valkey", t.valkey_addr, Some(&log))?;
    println!("valkey    started ({})", bin.display());
    Ok(())
}

// ---- S3 ---------------------------------------------------------------------------------------

fn start_s3(t: &Targets) -> Result<()> {
    if answers(t.s3_addr) {
        println!("s3        already answering on {}", t.s3_addr);
        return Ok(());
    }
    let state = env::state_dir();
    let log = state.join("s3.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(std::env::current_exe()?)
        .arg("s3")
        .arg("--root")
        .arg(state.join("s3"))
        .arg("--addr")
        .arg(t.s3_addr.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("starting the embedded S3 server")?;
    std::fs::write(state.join("s3.pid"), child.id().to_string())?;
    wait_for("S3", t.s3_addr, Some(&log))?;
    println!("s3        started (embedded, {})", state.join("s3").display());
    Ok(())
}

async fn ensure_bucket(t: &Targets) -> Result<()> {
    let cfg = quiver::Config::from_env()?;
    let s3 = quiver::storage::Storage::new(&cfg).await?;
    if s3.head_bucket().await.is_ok() {
        return Ok(());
    }
    s3.client.create_bucket().bucket(&t.bucket).send().await.map_err(|e| {
        anyhow!(
            "creating bucket {}: {}",
            t.bucket,
            quiver::storage::s3_error("CreateBucket", &t.bucket, e)
        )
    })?;
    Ok(())
}

fn stop_pidfile(name: &str, pidfile: &Path, addr: SocketAddr) -> Result<()> {
    let Ok(pid) = std::fs::read_to_string(pidfile) else { return Ok(()) };
    let Ok(pid) = pid.trim().parse::<i32>() else { return Ok(()) };
    // SAFETY: kill with a pid we started; a stale pid at worst gets ESRCH.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    while answers(addr) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if answers(addr) {
        bail!("{name} (pid {pid}) still answers on {addr}");
    }
    let _ = std::fs::remove_file(pidfile);
    Ok(())
}
