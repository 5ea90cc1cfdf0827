//! The `indexer` function against the real S3 started by `quiver-local up`. Every test publishes
//! under its own prefix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexer::{Indexer, IndexerSettings, Source};
use quiver::artifact;
use quiver::search::{self, BuildOptions, Corpus};
use quiver::storage::Storage;
use quiver::testing::{free_port, service_config, TestApp};

struct Fixture {
    settings: IndexerSettings,
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str, keep: usize) -> Self {
        let unique = quiver::testing::unique_name(name);
        let dir = std::env::temp_dir().join("quiver-indexer-tests").join(&unique);
        let settings = IndexerSettings {
            prefix: format!("test/indexer/{unique}/docs"),
            retention: quiver::artifact::Retention { keep, grace: std::time::Duration::ZERO },
            work_dir: dir.join("work"),
            source_key: None,
            build: BuildOptions::for_memory(Some(1024)),
        };
        Fixture { settings, dir }
    }

    async fn indexer(&self) -> Arc<Indexer> {
        Indexer::with_settings(&service_config(), self.settings.clone()).await.unwrap()
    }

    async fn app(&self) -> TestApp {
        TestApp::new(indexer::routes(self.indexer().await))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn storage() -> Storage {
    Storage::new(&service_config()).await.unwrap()
}

#[tokio::test]
async fn post_index_publishes_a_bundle_then_the_manifest() {
    let f = Fixture::new("publish", 3);
    let app = f.app().await;
    let r = app.post("/index?corpus=reference&docs=1000", "", "").await;
    assert_eq!(r.status, 201, "{r}");
    let report = r.json();
    assert_eq!(report["docs"], 1000);
    assert_eq!(report["segments"].as_u64().map(|s| s >= 1), Some(true));

    let (manifest, _) =
        artifact::fetch_manifest::<search::IndexMeta>(&storage().await, &f.settings.prefix, None)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(manifest.version, report["version"].as_str().unwrap());
    assert_eq!(manifest.meta.doc_count, 1000);
    assert_eq!(manifest.meta.bundle_size, report["bundle_bytes"].as_u64().unwrap());
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.files[0].name, search::BUNDLE);
    assert_eq!(
        manifest.files[0].key,
        format!("{}/{}/index.tar.zst", f.settings.prefix, manifest.version)
    );
    assert_eq!(manifest.files[0].size, report["bundle_bytes"].as_u64().unwrap());

    // The bundle unpacks into an index with one segment and every document.
    let dest = f.dir.join("check");
    artifact::download(&storage().await, &manifest.files[0], &dest.join("bundle")).await.unwrap();
    search::unpack(&dest.join("bundle"), &dest.join("index")).unwrap();
    let handle = search::IndexHandle::open(&dest.join("index")).unwrap();
    assert_eq!(handle.doc_count, 1000);
    assert!(!f.settings.work_dir.join(&manifest.version).exists(), "scratch space is cleaned up");
}

#[tokio::test]
async fn only_the_newest_k_versions_are_kept() {
    let f = Fixture::new("retain", 2);
    let ix = f.indexer().await;
    let mut versions = Vec::new();
    for seed in 0..4 {
        let r = ix.run(Source::Corpus { corpus: Corpus::Realistic, docs: 50, seed }).await.unwrap();
        versions.push(r.version);
    }
    let left = artifact::versions(&storage().await, &f.settings.prefix).await.unwrap();
    assert_eq!(left, versions[2..].to_vec());
}

#[tokio::test]
async fn jsonl_from_a_body_and_from_s3() {
    let f = Fixture::new("jsonl", 3);
    let app = f.app().await;
    let lines = "{\"id\":1,\"title\":\"One\",\"body\":\"first\",\"tags\":[\"a\"],\"created_at\":\"2026-01-01T00:00:00Z\"}\n\
                 {\"id\":2,\"title\":\"Two\",\"body\":\"second\",\"created_at\":1767225600}\n";
    let r = app.post("/index", "application/x-ndjson", lines).await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json()["docs"], 2);

    let s = storage().await;
    let key = format!("{}-source/docs.jsonl", f.settings.prefix);
    let body = aws_sdk_s3::primitives::ByteStream::from(lines.to_string().into_bytes());
    s.client.put_object().bucket(&s.bucket).key(&key).body(body).send().await.unwrap();
    let r = app.post(format!("/index?key={key}"), "", "").await;
    assert_eq!(r.status, 201, "{r}");
    let report = r.json();
    assert_eq!(report["docs"], 2);
    assert_eq!(report["source"], format!("s3:{key}"));
}

#[tokio::test]
async fn bad_input_is_a_4xx_and_publishes_nothing() {
    let f = Fixture::new("bad", 3);
    let app = f.app().await;
    let bad_line =
        "{\"id\":1,\"title\":\"ok\",\"body\":\"ok\"}\n{\"id\":2,\"body\":\"no title\"}\n";
    let cases: Vec<(String, &str, String, u16, &str)> = vec![
        ("/index?corpus=library".into(), "", String::new(), 400, "corpus"),
        ("/index?corpus=reference&docs=0".into(), "", String::new(), 400, "docs"),
        ("/index?corpus=reference&docs=2000000".into(), "", String::new(), 400, "docs"),
        ("/index?corpus=reference&docs=ten".into(), "", String::new(), 400, "docs"),
        ("/index?corpus=reference&seed=-1".into(), "", String::new(), 400, "seed"),
        ("/index?docs=10".into(), "", String::new(), 400, "docs"),
        ("/index?corpus=reference&key=a.jsonl".into(), "", String::new(), 400, "key"),
        ("/index?key=/abs.jsonl".into(), "", String::new(), 400, "key"),
        ("/index?key=test/indexer/missing.jsonl".into(), "", String::new(), 400, "key"),
        ("/index?limit=5".into(), "", String::new(), 400, "limit"),
        ("/index".into(), "application/x-ndjson", bad_line.into(), 400, "line 2: title"),
        (
            "/index".into(),
            "application/x-ndjson",
            "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"tags\":[\"no/slash\"]}".into(),
            400,
            "line 1: tags[0]",
        ),
        (
            "/index".into(),
            "application/x-ndjson",
            "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"created_at\":\"soon\"}".into(),
            400,
            "line 1: created_at",
        ),
        ("/index".into(), "application/x-ndjson", "not json\n".into(), 400, "line 1"),
        (
            "/index?corpus=reference".into(),
            "application/x-ndjson",
            bad_line.into(),
            400,
            "not both",
        ),
        ("/index".into(), "text/csv", "id,title\n1,a".into(), 415, "content type"),
    ];
    for (uri, ct, body, status, needle) in cases {
        let r = app.post(&uri, ct, body).await;
        assert_eq!(r.status, status, "{uri}: {r}");
        let v = r.json();
        assert!(v.to_string().contains(needle), "{uri}: expected {needle:?} in {v}");
        // Issue 29, item 9: the bucket's name stays in the logs.
        let bucket = quiver::testing::service_config().bucket.expect("a bucket");
        assert!(
            !v.to_string().contains(&format!("s3://{bucket}")),
            "{uri}: the answer names the bucket: {v}"
        );
    }
    let huge = vec![b' '; quiver::http::MAX_BODY_BYTES + 1];
    let r = app.post("/index", "application/x-ndjson", huge).await;
    assert_eq!(
        (r.status, r.json()["limit"].as_u64()),
        (413, Some(quiver::http::MAX_BODY_BYTES as u64))
    );
    let e =
        artifact::fetch_manifest::<search::IndexMeta>(&storage().await, &f.settings.prefix, None)
            .await
            .unwrap_err();
    assert!(e.to_string().contains("nothing has been published"), "{e}");
}

#[tokio::test]
async fn the_scheduled_event_runs_the_same_indexing() {
    let f = Fixture::new("schedule", 3);
    let ix = f.indexer().await;
    let event: quiver::lambda::Invocation =
        serde_json::from_str(include_str!("../../../events/indexer-schedule.json")).unwrap();
    let quiver::lambda::Invocation::Schedule(event) = event else {
        panic!("the scheduled event parsed as HTTP")
    };
    let report = ix.clone().on_schedule(event.clone()).await.unwrap();
    assert_eq!(report["docs"], 10_000, "no source configured: the reference corpus");
    assert!(report["source"].as_str().unwrap().starts_with("reference"));

    let mut custom = event;
    custom["detail"] = serde_json::json!({"corpus": "realistic", "docs": 300, "seed": 5});
    let report = ix.clone().on_schedule(custom.clone()).await.unwrap();
    assert_eq!(report["docs"], 300);
    custom["detail"] = serde_json::json!({"corpus": "realistic", "docs": 0});
    assert_eq!(ix.clone().on_schedule(custom).await.unwrap_err().status(), 400);

    // An HTTP event still parses as HTTP.
    let http: quiver::lambda::Invocation =
        serde_json::from_str(include_str!("../../../events/search.json")).unwrap();
    assert!(matches!(http, quiver::lambda::Invocation::Http(_)));
}

#[tokio::test]
async fn s3_down_is_503_naming_it() {
    let f = Fixture::new("down", 3);
    let mut cfg = service_config();
    cfg.s3_endpoint = Some(format!("http://127.0.0.1:{}", free_port()));
    cfg.s3_timeout = Duration::from_millis(1500);
    let ix = Indexer::with_settings(&cfg, f.settings.clone()).await.unwrap();
    let app = TestApp::new(indexer::routes(ix));
    let r = app.post("/index?corpus=reference&docs=10", "", "").await;
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(r.json()["dependency"], "s3");
}
