//! Issue 16, defect 2: publishers on different instances at once. Two `quiver-local serve`
//! processes share the services of `quiver-local up`, keep one version with no grace period, and
//! are asked to publish a snapshot and an index at the same moment, again and again. Whatever
//! each answers (201, or 409 when the other holds the prefix), the final manifests must name
//! files that exist and verify, and nothing else may be left under the prefixes.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{http, quiver_local, Group};
use quiver::artifact::{self, Lease};
use quiver::search::IndexMeta;
use quiver::snapshot::SnapshotMeta;
use quiver::storage::Storage;
use quiver::testing::{delete_prefix, free_port, service_config, unique_name};

const ROUNDS: usize = 4;

fn serve(port: u16, snapshots: &str, indexes: &str, tmp: &std::path::Path) -> Group {
    let mut cmd = quiver_local();
    cmd.arg("serve")
        .env("QUIVER_SERVE_ADDR", format!("127.0.0.1:{port}"))
        .env("QUIVER_SNAPSHOT_PREFIX", snapshots)
        .env("QUIVER_INDEX_PREFIX", indexes)
        .env("QUIVER_KEEP_VERSIONS", "1")
        .env("QUIVER_RETAIN_GRACE_S", "0")
        .env("QUIVER_TMP_DIR", tmp)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    Group::spawn(cmd)
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http("GET", &format!("http://127.0.0.1:{port}/health")).map(|r| r.0).ok() != Some(200) {
        assert!(Instant::now() < deadline, "quiver-local serve on {port} never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Downloads every file the manifest names (each checked against its size and checksum) and
/// checks that no other version, and no lease, is left under the prefix.
async fn verify<M: artifact::Meta>(s: &Storage, prefix: &str, dir: &std::path::Path) {
    let (m, _) = artifact::fetch_manifest::<M>(s, prefix, None)
        .await
        .unwrap_or_else(|e| panic!("{prefix}: {e}"))
        .unwrap();
    for f in &m.files {
        artifact::download(s, f, &dir.join(&m.version).join(&f.name))
            .await
            .unwrap_or_else(|e| panic!("{prefix}: the manifest names {} but {e}", f.key));
    }
    assert_eq!(
        artifact::versions(s, prefix).await.unwrap(),
        vec![m.version.clone()],
        "{prefix}: one version kept, no orphans"
    );
    let lease = s.client.head_object().bucket(&s.bucket).key(Lease::key(prefix)).send().await;
    assert!(lease.is_err(), "{prefix}: every run gave its lease back");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_publishers_leave_a_manifest_whose_files_all_verify() {
    let run = unique_name("publishers");
    let snapshots = format!("test/{run}/snapshots");
    let indexes = format!("test/{run}/indexes");
    let tmp = std::env::temp_dir().join(&run);
    let ports = [free_port(), free_port()];
    let _servers: Vec<Group> = ports
        .iter()
        .enumerate()
        .map(|(k, &p)| serve(p, &snapshots, &indexes, &tmp.join(k.to_string())))
        .collect();
    ports.iter().for_each(|&p| wait_healthy(p));

    let mut published = [0usize; 2];
    for round in 0..ROUNDS {
        let calls: Vec<(usize, String)> = ports
            .iter()
            .flat_map(|p| {
                [
                    (0, format!("http://127.0.0.1:{p}/snapshot")),
                    (
                        1,
                        format!(
                            "http://127.0.0.1:{p}/index?corpus=reference&docs=2000&seed={round}"
                        ),
                    ),
                ]
            })
            .collect();
        let answers: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = calls
                .iter()
                .map(|(kind, url)| scope.spawn(move || (*kind, url, http("POST", url))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (kind, url, answer) in answers {
            let (status, body) = answer.unwrap_or_else(|e| panic!("POST {url}: {e}"));
            assert!(matches!(status, 201 | 409), "round {round}: POST {url}: {status} {body}");
            published[kind] += (status == 201) as usize;
        }
    }
    assert!(
        published.iter().all(|&n| n >= ROUNDS),
        "each round publishes each kind at least once: {published:?}"
    );

    let s = Storage::new(&service_config()).await.unwrap();
    verify::<SnapshotMeta>(&s, &snapshots, &tmp.join("verify")).await;
    verify::<IndexMeta>(&s, &indexes, &tmp.join("verify")).await;
    delete_prefix(&s, &format!("test/{run}")).await;
    let _ = std::fs::remove_dir_all(&tmp);
}
