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

/// Defect 2: publishers on different instances were serialized only by a per-instance mutex.
#[tokio::test(flavor = "multi_thread")]
async fn one_publisher_holds_a_prefix_and_an_expired_lease_is_taken_over() {
    let (s, p) = (storage().await, prefix("lease"));
    let a = Lease::acquire(&s, &p, "test run A", Duration::from_secs(60)).await.unwrap();
    let e = Lease::acquire(&s, &p, "test run B", Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("test run A")), "{e}");
    assert_eq!(e.status(), http::StatusCode::CONFLICT);
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
    assert!(stale.reason.contains("MB"), "{}", stale.reason);
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
