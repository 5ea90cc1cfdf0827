//! Versioned artifacts against the S3 server started by `quiver-local up` (issue 16): the
//! manifest only moves forward, one publisher holds a prefix at a time, retention spares what may
//! still be in use, a reader switches versions in the background, and `/tmp` stays flat when a
//! version does not fit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::artifact::{self, Lease, Manifest, Retention, Tracker};
use quiver::log_lines::LogLines;
use quiver::storage::Storage;
use quiver::testing::{delete_prefix, disk_bytes, service_config, unique_name};
use quiver::Error;
use serde_json::json;

async fn storage() -> Storage {
    Storage::new(&service_config()).await.unwrap()
}

fn prefix(tag: &str) -> String {
    format!("test/artifact/{}", unique_name(tag))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join("quiver-artifact-tests").join(unique_name(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A local file of `n` bytes, different for each `seed`.
fn file(dir: &Path, name: &str, n: usize, seed: u8) -> (String, PathBuf) {
    let path = dir.join(format!("{name}-{seed}"));
    let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    std::fs::write(&path, bytes).unwrap();
    (name.to_string(), path)
}

/// A version name started `ago` before now, in the shape `new_version` gives.
fn version_from(ago: chrono::Duration) -> String {
    format!("{}-00aa", (chrono::Utc::now() - ago).format("%Y%m%dT%H%M%S%3fZ"))
}

/// A new version name, later than every earlier one.
async fn next_version() -> String {
    tokio::time::sleep(Duration::from_millis(3)).await;
    artifact::new_version()
}

async fn put(s: &Storage, key: &str) {
    let body = aws_sdk_s3::primitives::ByteStream::from_static(b"orphan");
    s.client.put_object().bucket(&s.bucket).key(key).body(body).send().await.unwrap();
}

async fn manifest(s: &Storage, prefix: &str) -> Manifest {
    artifact::fetch_manifest(s, prefix, None).await.unwrap().unwrap().0
}

/// Defect 2: an export that started earlier but finished later moved the manifest back in time.
#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_only_moves_forward() {
    let (s, p, dir) = (storage().await, prefix("forward"), scratch("forward"));
    let older = next_version().await;
    let newer = next_version().await;
    artifact::publish(&s, &p, &newer, &[file(&dir, "a.bin", 100, 1)], json!({})).await.unwrap();
    let e = artifact::publish(&s, &p, &older, &[file(&dir, "a.bin", 100, 2)], json!({}))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains(&newer)), "{e}");
    assert_eq!(manifest(&s, &p).await.version, newer, "the manifest did not move back");
    assert_eq!(
        artifact::versions(&s, &p).await.unwrap(),
        vec![newer.clone()],
        "the refused version's files are gone"
    );
    let again = artifact::publish(&s, &p, &newer, &[file(&dir, "a.bin", 100, 3)], json!({})).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "the same version is not published twice");
    let third = next_version().await;
    artifact::publish(&s, &p, &third, &[file(&dir, "a.bin", 100, 4)], json!({})).await.unwrap();
    let m = manifest(&s, &p).await;
    assert_eq!((m.version, m.previous), (third, vec![newer]), "the manifest remembers its past");
    delete_prefix(&s, &p).await;
}

/// Defect 2: retention deleted by name order, so it could delete a version another run was still
/// uploading, and orphans of failed runs counted toward `keep`.
#[tokio::test(flavor = "multi_thread")]
async fn retention_spares_young_and_foreign_versions_and_removes_old_orphans() {
    let (s, p, dir) = (storage().await, prefix("retain"), scratch("retain"));
    let old_orphan = version_from(chrono::Duration::hours(2));
    put(&s, &format!("{p}/{old_orphan}/a.bin")).await;
    put(&s, &format!("{p}/backup/a.bin")).await;
    let mut published = Vec::new();
    let mut last = None;
    for k in 0..3u8 {
        if k == 2 {
            // A run that started before the newest and is still uploading (or failed just now).
            put(&s, &format!("{p}/{}/a.bin", next_version().await)).await;
        }
        let v = next_version().await;
        let files = [file(&dir, "a.bin", 64, k)];
        last = Some(artifact::publish(&s, &p, &v, &files, json!({})).await.unwrap());
        published.push(v);
    }
    let m = last.unwrap();
    let hour = Retention { keep: 1, grace: Duration::from_secs(3600) };
    let deleted = artifact::retain(&s, &p, &hour, &m).await.unwrap();
    assert_eq!(deleted, vec![old_orphan], "only the old orphan is past the grace period");
    let left = artifact::versions(&s, &p).await.unwrap();
    assert!(left.contains(&"backup".to_string()) && left.len() == 5, "{left:?}");

    let now = Retention { keep: 2, grace: Duration::ZERO };
    artifact::retain(&s, &p, &now, &m).await.unwrap();
    let left = artifact::versions(&s, &p).await.unwrap();
    let mut expected = vec![published[1].clone(), published[2].clone(), "backup".to_string()];
    expected.sort();
    assert_eq!(
        left, expected,
        "the manifest's version and its predecessor stay; no name of another's is touched"
    );
    delete_prefix(&s, &p).await;
}

/// Issue 29, item 7: retention's grace counts from when a version stopped being current, not from
/// when it was made. With `keep = 1`, a version made two hours ago and replaced just now may still
/// be downloading somewhere: it stays; one replaced two hours ago goes.
#[tokio::test(flavor = "multi_thread")]
async fn retention_counts_from_when_a_version_stopped_being_current() {
    let (s, p, dir) = (storage().await, prefix("replaced"), scratch("replaced"));
    let hour = Retention { keep: 1, grace: Duration::from_secs(3600) };
    let (v1, v2) =
        (version_from(chrono::Duration::hours(3)), version_from(chrono::Duration::hours(2)));
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 64, 1)], json!({})).await.unwrap();
    let m2 =
        artifact::publish(&s, &p, &v2, &[file(&dir, "a.bin", 64, 2)], json!({})).await.unwrap();
    assert_eq!(m2.replaced_at, vec![m2.created_at.clone()], "v1 stopped being current now");
    assert!(
        artifact::retain(&s, &p, &hour, &m2).await.unwrap().is_empty(),
        "v1 was current a moment ago"
    );

    // The same history, as if v2 had replaced v1 two hours ago: then v1 goes.
    let v3 = next_version().await;
    let mut m3 =
        artifact::publish(&s, &p, &v3, &[file(&dir, "a.bin", 64, 3)], json!({})).await.unwrap();
    assert_eq!(m3.previous, vec![v2.clone(), v1.clone()]);
    assert!(
        artifact::retain(&s, &p, &hour, &m3).await.unwrap().is_empty(),
        "v2 was current a moment ago; v1's replacement is recorded as just now"
    );
    m3.replaced_at[1] = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    assert_eq!(artifact::retain(&s, &p, &hour, &m3).await.unwrap(), vec![v1]);
    assert_eq!(artifact::versions(&s, &p).await.unwrap(), vec![v2, v3]);
    delete_prefix(&s, &p).await;
}

/// Defect 2: publishers on different instances were serialized only by a per-instance mutex.
#[tokio::test(flavor = "multi_thread")]
async fn one_publisher_holds_a_prefix_and_an_expired_lease_is_taken_over() {
    let (s, p) = (storage().await, prefix("lease"));
    let a = Lease::acquire(&s, &p, "test run A", Duration::from_secs(60)).await.unwrap();
    let e = Lease::acquire(&s, &p, "test run B", Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("test run A")), "{e}");
    assert_eq!(e.status(), http::StatusCode::CONFLICT);
    // Issue 29, item 9: where the holder runs (its log stream, here its pid) stays in the log.
    let here = format!("pid {}", std::process::id());
    assert!(!e.to_string().contains(&here), "the 409 names where the holder runs: {e}");
    a.release().await;
    let b = Lease::acquire(&s, &p, "test run B", Duration::from_secs(1)).await.unwrap();
    // B dies without giving the lease back; after its lifetime, C takes it over.
    std::mem::forget(b);
    let e = Lease::acquire(&s, &p, "test run C", Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("test run B")), "{e}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = Lease::acquire(&s, &p, "test run C", Duration::from_secs(60)).await.unwrap();
    c.release().await;
    delete_prefix(&s, &p).await;
    let _ = s.client.delete_object().bucket(&s.bucket).key(Lease::key(&p)).send().await;
}

async fn instant(m: Manifest, _dir: PathBuf) -> quiver::Result<String> {
    Ok(m.version)
}

/// Defect 3: a version switch ran inside a user's request, which paid the whole load while
/// concurrent requests queued behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_loads_in_the_background_while_the_old_one_serves() {
    let (s, p, dir) = (storage().await, prefix("switch"), scratch("switch"));
    let v1 = next_version().await;
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 1000, 1)], json!({})).await.unwrap();
    let t: Arc<Tracker<String>> =
        Tracker::new(s.clone(), &p, dir.join("reader"), Duration::from_secs(3600));
    assert_eq!(
        t.current(instant).await.unwrap().value,
        v1,
        "a cold reader waits for its first load"
    );

    let v2 = next_version().await;
    artifact::publish(&s, &p, &v2, &[file(&dir, "a.bin", 1000, 2)], json!({})).await.unwrap();
    t.expire();
    let slow = |m: Manifest, _dir: PathBuf| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(m.version)
    };
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(t.current(slow).await.unwrap().value, v1, "the loaded version serves meanwhile");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no request waited for the load: {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if t.current(instant).await.unwrap().value == v2 {
            break;
        }
        assert!(Instant::now() < deadline, "the new version was never switched to");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "the switch came after the slow load");
    delete_prefix(&s, &p).await;
}

/// A tmpfs of `mb` MB, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(mb: u32) -> Self {
        let dir = scratch("tmpfs");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs a small tmpfs as QUIVER_TMP_DIR and root to mount it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Defect 4: a failed download left its `.part`, a failed load its version directory, and a
/// version too large for `/tmp` left the instance on old data with no signal.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_does_not_fit_keeps_the_old_one_and_tmp_stays_flat() {
    let lines = LogLines::default();
    // Global: checks and loads log from the background thread. No other test here sets one.
    tracing::subscriber::set_global_default(lines.subscriber())
        .expect("the only global subscriber");
    let (s, p, dir) = (storage().await, prefix("tmp"), scratch("tmp"));
    let tmp = Tmpfs::mount(4);
    let v1 = next_version().await;
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 1 << 20, 1)], json!({})).await.unwrap();
    let t: Arc<Tracker<String>> =
        Tracker::new(s.clone(), &p, tmp.0.join("reader"), Duration::from_secs(3600));
    assert_eq!(t.current(instant).await.unwrap().value, v1);
    let used = disk_bytes(&tmp.0);
    assert!(t.stale().is_none());

    let v2 = next_version().await;
    let big = file(&dir, "a.bin", 6 << 20, 2);
    let m2 = artifact::publish(&s, &p, &v2, &[big], json!({})).await.unwrap();
    for check in 0..20 {
        let e = t.refresh(instant).await.err().expect("a version that does not fit is refused");
        assert!(e.to_string().contains("only"), "check {check}: {e}");
        assert_eq!(t.current(instant).await.unwrap().value, v1, "the old version serves on");
        assert_eq!(disk_bytes(&tmp.0), used, "check {check}: /tmp grew");
    }
    let log = lines.text();
    let errors = log.lines().filter(|l| l.contains("ERROR") && l.contains(&v2)).count();
    assert_eq!(errors, 1, "one error per version, not one per check:\n{log}");
    let stale = t.stale().expect("the instance knows it is stale");
    assert_eq!((stale.serving.as_deref(), stale.newest.as_str()), (Some(v1.as_str()), v2.as_str()));
    // The answer names the kind of failure; the sizes are in the log (issue 29, item 9).
    assert_eq!(stale.reason, "unavailable");
    assert!(log.lines().any(|l| l.contains(&v2) && l.contains("MB")), "{log}");
    assert!(artifact::stale_artifacts().iter().any(|a| a.prefix == p), "/health sees it");

    // A download that runs out of space midway leaves no `.part`.
    let e = artifact::download(&s, &m2.files[0], &tmp.0.join("direct/a.bin")).await.unwrap_err();
    assert!(e.to_string().contains("No space") || e.to_string().contains("space"), "{e}");
    assert_eq!(disk_bytes(&tmp.0), used, "the partial download was removed");

    // A version that downloads but fails to open leaves nothing behind either.
    let v3 = next_version().await;
    artifact::publish(&s, &p, &v3, &[file(&dir, "a.bin", 1 << 20, 3)], json!({})).await.unwrap();
    let broken = |_m: Manifest, _d: PathBuf| async move {
        Err::<String, _>(Error::unavailable("test", "this version does not open"))
    };
    assert!(t.refresh(broken).await.is_err());
    assert!(!tmp.0.join("reader").join(&v3).exists(), "the failed version's directory is gone");
    assert_eq!(disk_bytes(&tmp.0), used);

    // Once it fits and opens, the switch happens, the old version's files go with its last
    // reader, and the instance is no longer stale.
    assert_eq!(t.refresh(instant).await.unwrap().value, v3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!tmp.0.join("reader").join(&v1).exists(), "the old version's files are deleted");
    assert!(t.stale().is_none() && !artifact::stale_artifacts().iter().any(|a| a.prefix == p));
    assert_eq!(disk_bytes(&tmp.0), 1 << 20, "one version on disk");
    drop(t);
    delete_prefix(&s, &p).await;
}

/// Issue 29, item 1: a manifest that readers would refuse (here a file name no reader opens, as
/// `dt=+10000-01-01/` was) is refused before anything is uploaded, and nothing is published.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_readers_would_refuse_is_never_published() {
    let (s, p, dir) = (storage().await, prefix("refused"), scratch("refused"));
    let v = next_version().await;
    let e = artifact::publish(&s, &p, &v, &[file(&dir, "+10000.bin", 100, 1)], json!({}))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Internal(m) if m.contains("+10000.bin")), "{e}");
    assert!(artifact::versions(&s, &p).await.unwrap().is_empty(), "nothing was uploaded");
    let unpublished = artifact::fetch_manifest::<serde_json::Value>(&s, &p, None).await;
    assert_eq!(unpublished.unwrap_err().outage(), Some("unpublished"));
}

/// Issue 29, item 1: a published manifest that readers cannot use keeps the loaded version
/// serving and says so (`stale`, which `/health` lists and `x-data-stale` reflects), instead of
/// failing silently; it is not fetched again until it changes, and a good version ends it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_manifest_marks_the_data_stale() {
    let (s, p, dir) = (storage().await, prefix("unusable"), scratch("unusable"));
    let v1 = next_version().await;
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 100, 1)], json!({})).await.unwrap();
    let t: Arc<Tracker<String>> =
        Tracker::new(s.clone(), &p, dir.join("reader"), Duration::from_secs(3600));
    assert_eq!(t.refresh(instant).await.unwrap().value, v1);

    // What an older publisher wrote for an event in year 10000.
    let v2 = next_version().await;
    let mut bad = serde_json::to_value(manifest(&s, &p).await).unwrap();
    bad["version"] = json!(v2);
    bad["files"][0]["name"] = json!("dt=+10000-01-01/part-00000.parquet");
    bad["files"][0]["key"] = json!(format!("{p}/{v2}/dt=+10000-01-01/part-00000.parquet"));
    let body = aws_sdk_s3::primitives::ByteStream::from(serde_json::to_vec(&bad).unwrap());
    let key = artifact::manifest_key(&p);
    s.client.put_object().bucket(&s.bucket).key(&key).body(body).send().await.unwrap();

    let e = t.refresh(instant).await.err().expect("the manifest is refused");
    assert_eq!(e.outage(), Some("corrupt"), "{e}");
    assert_eq!(t.current(instant).await.unwrap().value, v1, "the loaded version serves on");
    let stale = t.stale().expect("the instance says it is stale");
    assert_eq!(
        (stale.serving.as_deref(), stale.newest.as_str(), stale.reason.as_str()),
        (Some(v1.as_str()), v2.as_str(), "corrupt")
    );
    assert!(artifact::stale_artifacts().iter().any(|a| a.prefix == p), "/health sees it");
    // A due check in the background leaves it so.
    t.expire();
    assert_eq!(t.current(instant).await.unwrap().value, v1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.stale().map(|s| s.reason), Some("corrupt".to_string()));

    let v3 = next_version().await;
    artifact::publish(&s, &p, &v3, &[file(&dir, "a.bin", 100, 3)], json!({})).await.unwrap();
    assert_eq!(t.refresh(instant).await.unwrap().value, v3);
    assert!(t.stale().is_none() && !artifact::stale_artifacts().iter().any(|a| a.prefix == p));
    drop(t);
    delete_prefix(&s, &p).await;
}

/// What [`intercepting_proxy`] does with a request.
enum Verdict {
    Forward,
    /// Forward it, then drop the reply and the connection, as a lost reply would be.
    LoseReply,
}

type Decide =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Verdict> + Send + Sync + 'static>;

/// A proxy in front of the S3 server that asks `decide` about every request (by its request
/// line, e.g. `PUT /bucket/p/manifest.json?x-id=PutObject HTTP/1.1`) before forwarding it.
/// Returns a `Storage` that goes through it.
async fn intercepting_proxy(decide: Decide) -> Storage {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = service_config();
    let endpoint = cfg.s3_endpoint.clone().expect("the S3 endpoint is configured");
    let u = url::Url::parse(&endpoint).unwrap();
    let upstream = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.s3_endpoint = Some(format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, decide) = (upstream.clone(), decide.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let lose_reply = Arc::new(AtomicBool::new(false));
                let lose = lose_reply.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        // A request starts a read (the SDK sends one at a time per connection).
                        let line = String::from_utf8_lossy(&buf[..n.min(512)]).to_string();
                        let line = line.lines().next().unwrap_or("").to_string();
                        if line.ends_with("HTTP/1.1") {
                            if let Verdict::LoseReply = decide(line).await {
                                lose.store(true, Ordering::SeqCst);
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    if lose_reply.load(Ordering::SeqCst) {
                        return; // both halves close: the reply never reaches the client
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Storage::new(&cfg).await.unwrap()
}

/// Issue 29, item 3: S3 applied the manifest PUT but its reply was lost, so the SDK's retry got
/// 412. That is this run's own write: the version is published and its files stay readable.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_reply_to_the_manifest_put_still_publishes() {
    let direct = storage().await;
    let (p, dir) = (prefix("lost"), scratch("lost"));
    for round in 0..2 {
        // The first manifest (If-None-Match: *), then one that replaces it (If-Match), each
        // through a proxy that loses the reply to its first manifest PUT.
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = intercepting_proxy(Arc::new(move |line: String| {
            let lose = line.starts_with("PUT ")
                && line.contains("/manifest.json")
                && !lost.swap(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if lose {
                    Verdict::LoseReply
                } else {
                    Verdict::Forward
                }
            })
        }))
        .await;
        let v = next_version().await;
        let m = artifact::publish(&s, &p, &v, &[file(&dir, "a.bin", 1000, round)], json!({}))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(manifest(&direct, &p).await.version, v, "round {round}");
        let dest = dir.join(format!("check-{round}"));
        artifact::download(&direct, &m.files[0], &dest).await.unwrap();
    }
    delete_prefix(&direct, &p).await;
}

/// Issue 29, item 8: a lease released by its holder after another run took it over (between the
/// holder's read and its delete) stays with the new holder: the delete is conditional.
#[tokio::test(flavor = "multi_thread")]
async fn releasing_a_lease_taken_over_meanwhile_leaves_it_to_the_new_holder() {
    let (direct, p) = (storage().await, prefix("takeover"));
    let key = Lease::key(&p);
    let (d, k) = (direct.clone(), key.clone());
    let s = intercepting_proxy(Arc::new(move |line: String| {
        let (d, k) = (d.clone(), k.clone());
        Box::pin(async move {
            if line.starts_with("DELETE ") && line.contains("publisher.lease") {
                // Another run takes the lease over just before the delete arrives.
                let body = br#"{"holder":"the new holder","token":"t2","expires_at":"2999-01-01T00:00:00Z"}"#;
                let body = aws_sdk_s3::primitives::ByteStream::from_static(body);
                d.client.put_object().bucket(&d.bucket).key(&k).body(body).send().await.unwrap();
            }
            Verdict::Forward
        })
    }))
    .await;
    let lease = Lease::acquire(&s, &p, "test", Duration::from_secs(60)).await.unwrap();
    lease.release().await;
    let held = direct.client.get_object().bucket(&direct.bucket).key(&key).send().await;
    let body = held.expect("the new holder's lease is still there").body.collect().await.unwrap();
    assert!(String::from_utf8_lossy(&body.into_bytes()).contains("the new holder"));
    delete_prefix(&direct, &p).await;
}

/// Issue 29, item 3: the lease's conditional PUT was applied but its reply was lost, so the
/// retry met 412: the lease is this run's own, not another run's.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_reply_to_the_lease_put_still_takes_the_lease() {
    let (direct, p) = (storage().await, prefix("lostlease"));
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = intercepting_proxy(Arc::new(move |line: String| {
        let lose = line.starts_with("PUT ")
            && line.contains("publisher.lease")
            && !lost.swap(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if lose {
                Verdict::LoseReply
            } else {
                Verdict::Forward
            }
        })
    }))
    .await;
    let lease = Lease::acquire(&s, &p, "test", Duration::from_secs(60)).await.unwrap();
    lease.release().await;
    delete_prefix(&direct, &p).await;
}

/// Issue 29, item 6: a newer version that is still loading (on Lambda a switch runs only while
/// invocations do) makes answers stale once it has waited longer than the bound, before any
/// failure; the switch ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_waiting_longer_than_the_bound_is_reported_stale() {
    let (s, p, dir) = (storage().await, prefix("waiting"), scratch("waiting"));
    let v1 = next_version().await;
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 100, 1)], json!({})).await.unwrap();
    let t: Arc<Tracker<String>> = Tracker::new(s.clone(), &p, dir.join("reader"), Duration::ZERO);
    t.set_stale_after(Duration::from_millis(300));
    assert_eq!(t.refresh(instant).await.unwrap().value, v1);
    let v2 = next_version().await;
    artifact::publish(&s, &p, &v2, &[file(&dir, "a.bin", 100, 2)], json!({})).await.unwrap();
    let slow = |m: Manifest, _d: PathBuf| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(m.version)
    };
    // The check is due: it starts in the background and this answer comes from v1.
    assert_eq!(t.current(slow).await.unwrap().value, v1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.stale().is_none(), "not stale within the bound");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = t.stale().expect("stale once the new version has waited longer than the bound");
    assert_eq!(
        (stale.serving.as_deref(), stale.newest.as_str(), stale.reason.as_str()),
        (Some(v1.as_str()), v2.as_str(), "switching")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.loaded().unwrap().value != v2 {
        assert!(Instant::now() < deadline, "the switch did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.stale().is_none(), "served: no longer stale");
    drop(t);
    delete_prefix(&s, &p).await;
}

/// Issue 29, item 5: a version that cannot load is not downloaded and loaded again at every check
/// until its manifest changes (a passing fault is tried again); an explicit refresh tries again.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_cannot_load_is_not_tried_again_until_it_changes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (s, p, dir) = (storage().await, prefix("noretry"), scratch("noretry"));
    let v1 = next_version().await;
    artifact::publish(&s, &p, &v1, &[file(&dir, "a.bin", 100, 1)], json!({})).await.unwrap();
    let t: Arc<Tracker<String>> = Tracker::new(s.clone(), &p, dir.join("reader"), Duration::ZERO);
    assert_eq!(t.refresh(instant).await.unwrap().value, v1);
    let v2 = next_version().await;
    artifact::publish(&s, &p, &v2, &[file(&dir, "a.bin", 100, 2)], json!({})).await.unwrap();
    let opens = Arc::new(AtomicUsize::new(0));
    let failing = |reason: &'static str| {
        let opens = opens.clone();
        move |_m: Manifest, _d: PathBuf| async move {
            opens.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(Error::unavailable("snapshot", reason))
        }
    };
    let e = t.refresh(failing("version v2 could not be loaded: Out of Memory Error")).await;
    assert_eq!(e.err().and_then(|e| e.outage()), Some("memory"));
    for _ in 0..3 {
        t.current(failing("out of memory")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(opens.load(Ordering::SeqCst), 1, "checks in the background did not load it again");
    assert_eq!(t.stale().map(|s| s.reason), Some("memory".to_string()));

    // A passing fault is tried at the next check.
    let v3 = next_version().await;
    artifact::publish(&s, &p, &v3, &[file(&dir, "a.bin", 100, 3)], json!({})).await.unwrap();
    let e = t.refresh(failing("S3 timed out")).await;
    assert_eq!(e.err().and_then(|e| e.outage()), Some("timeout"));
    t.current(failing("S3 timed out")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(opens.load(Ordering::SeqCst), 3, "a timeout is tried again");
    assert_eq!(t.refresh(instant).await.unwrap().value, v3);
    assert!(t.stale().is_none());
    drop(t);
    delete_prefix(&s, &p).await;
}
