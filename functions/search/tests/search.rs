//! The `search` function against the real S3 and Valkey started by `quiver-local up`, over indexes
//! that the `indexer` publishes. Every test publishes under its own S3 prefix and unpacks into its
//! own directory, so tests run in parallel without seeing each other's versions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexer::{Indexer, Source};
use quiver::search::{BuildOptions, Corpus};
use quiver::testing::{free_port, service_config, TestApp};
use search::{Search, SearchSettings};
use serde_json::Value;

struct Fixture {
    prefix: String,
    dir: PathBuf,
    indexer: Arc<Indexer>,
}

impl Fixture {
    async fn new(name: &str) -> Self {
        let unique = quiver::testing::unique_name(name);
        let prefix = format!("test/search/{unique}/docs");
        let dir = std::env::temp_dir().join("quiver-search-tests").join(&unique);
        let settings = indexer::IndexerSettings {
            prefix: prefix.clone(),
            retention: quiver::artifact::Retention { keep: 3, grace: std::time::Duration::ZERO },
            work_dir: dir.join("work"),
            source_key: None,
            build: BuildOptions::for_memory(Some(1024)),
        };
        let indexer = Indexer::with_settings(&service_config(), settings).await.unwrap();
        Fixture { prefix, dir, indexer }
    }

    async fn search(&self, check_every: Duration) -> Arc<Search> {
        let settings = SearchSettings {
            prefix: self.prefix.clone(),
            dir: self.dir.join("search"),
            check_every,
        };
        // A loaded test machine can take longer than the 25 ms default for the first Valkey call,
        // which would turn an expected MISS into a BYPASS.
        let mut cfg = service_config();
        cfg.valkey_timeout = Duration::from_secs(2);
        Search::with_settings(&cfg, settings).await.unwrap()
    }

    async fn publish_jsonl(&self, lines: &[Value]) -> indexer::IndexReport {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.indexer.run(Source::Body(body.into())).await.unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn app(s: &Arc<Search>) -> TestApp {
    TestApp::new(search::routes(s.clone()))
}

fn ids(v: &Value) -> Vec<u64> {
    v["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn doc(id: u64, title: &str, body: &str, tags: &[&str], created_at: &str) -> Value {
    serde_json::json!({"id": id, "title": title, "body": body, "tags": tags, "created_at": created_at})
}

fn small_corpus() -> Vec<Value> {
    vec![
        doc(1, "Tantivy Query Parser", "How a query is read.", &["search"], "2026-01-05T10:00:00Z"),
        doc(2, "Kitchen notes", "The tantivy query parser came up at dinner; the parser, the parser, the query, tantivy again.", &["food"], "2026-02-10T10:00:00Z"),
        doc(3, "Foxes", "The quick brown fox jumps over the lazy dog.", &["animals"], "2026-03-01T00:00:00Z"),
        doc(4, "More foxes", "A brown dog and a quick fox, brown and quick but never together.", &["animals", "search"], "2026-03-20T00:00:00Z"),
        doc(5, "Escaping", "Never trust <script>alert(1)</script> in fish & chips reviews about foxes.", &["web"], "2026-04-01T00:00:00Z"),
    ]
}

#[tokio::test]
async fn relevance_phrases_tags_dates_and_snippets() {
    let f = Fixture::new("relevance").await;
    let report = f.publish_jsonl(&small_corpus()).await;
    let s = f.search(Duration::from_secs(3600)).await;
    let app = app(&s);

    let r = app.get("/search?q=tantivy+query+parser").await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(ids(&v)[0], 1, "the exact title match ranks first: {v}");
    assert_eq!(v["total_hits"], 2);
    assert_eq!(v["index_version"], report.version.as_str());
    assert_eq!(v["query"], "tantivy query parser");
    assert!(v["took_us"].is_u64());

    let v = app.get("/search?q=%22quick+brown%22").await.json();
    assert_eq!(ids(&v), vec![3], "only the phrase matches, not both words apart: {v}");
    let v = app.get("/search?q=quick+AND+brown").await.json();
    assert_eq!(v["total_hits"], 2);
    let v = app.get("/search?q=title:foxes").await.json();
    assert_eq!(v["total_hits"], 2);

    let v = app.get("/search?q=fox+OR+foxes&tag=animals").await.json();
    assert_eq!(
        {
            let mut i = ids(&v);
            i.sort();
            i
        },
        vec![3, 4],
        "{v}"
    );
    let v = app.get("/search?q=fox+OR+foxes&from=2026-03-10&to=2026-03-31").await.json();
    assert_eq!(ids(&v), vec![4], "{v}");
    let v = app.get("/search?q=fox+OR+foxes&to=2026-03-01").await.json();
    assert_eq!(ids(&v), vec![3], "a bare date as `to` includes that day: {v}");

    let v = app.get("/search?q=fish").await.json();
    let snippet = v["results"][0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("<b>fish</b>"), "{snippet}");
    assert!(
        snippet.contains("&lt;script&gt;")
            && snippet.contains("&amp;")
            && !snippet.contains("<script>"),
        "{snippet}"
    );
    // A title-only match still gets a (plain, escaped) snippet from the body.
    let v = app.get("/search?q=title:escaping").await.json();
    assert!(
        v["results"][0]["snippet"].as_str().unwrap().starts_with("Never trust &lt;script&gt;"),
        "{v}"
    );
}

#[tokio::test]
async fn pages_together_equal_one_big_page() {
    let f = Fixture::new("pages").await;
    f.indexer.run(Source::Corpus { corpus: Corpus::Realistic, docs: 3000, seed: 7 }).await.unwrap();
    let s = f.search(Duration::from_secs(3600)).await;
    let app = app(&s);
    let r = app.get("/search?q=performance+OR+search+OR+the&limit=100").await;
    assert_eq!(r.status, 200, "{r}");
    let big = r.json();
    assert!(big["total_hits"].as_u64().unwrap() > 100);
    let mut paged = Vec::new();
    for offset in (0..100).step_by(10) {
        let page = app
            .get(format!("/search?q=performance+OR+search+OR+the&limit=10&offset={offset}"))
            .await
            .json();
        assert_eq!(page["total_hits"], big["total_hits"]);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&big));
    let past = app.get("/search?q=performance&offset=10000").await.json();
    assert_eq!(past["results"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn every_bad_parameter_is_a_4xx_naming_it() {
    let f = Fixture::new("params").await;
    f.publish_jsonl(&small_corpus()).await;
    let s = f.search(Duration::from_secs(3600)).await;
    let app = app(&s);
    let long = format!("/search?q={}", "a".repeat(300));
    for (uri, param) in [
        ("/search", "q"),
        ("/search?q=", "q"),
        (long.as_str(), "q"),
        ("/search?q=fox&limit=0", "limit"),
        ("/search?q=fox&limit=101", "limit"),
        ("/search?q=fox&limit=many", "limit"),
        ("/search?q=fox&offset=10001", "offset"),
        ("/search?q=fox&tag=a%2Fb", "tag"),
        ("/search?q=fox&from=last+week", "from"),
        ("/search?q=fox&to=2026-02-30", "to"),
        ("/search?q=fox&q=dog", "q"),
        ("/search?q=fox&page=2", "page"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, 400, "{uri}: {r}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["param"], param, "{uri}: {r}");
    }
    assert_eq!(app.send("POST", "/search?q=fox", &[], "").await.status, 405);
    // What the document allows is answered: a query that is not Tantivy syntax is searched
    // leniently, whitespace finds nothing, and so does a window that ends before it starts.
    for uri in [
        "/search?q=title:(",
        "/search?q=%22unclosed",
        "/search?q=nosuchfield:fox",
        "/search?q=+",
        "/search?q=fox&from=2026-03-01&to=2026-02-01",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, 200, "{uri}: {r}");
    }
    let r = app.get("/search?q=fox&from=2026-03-01&to=2026-02-01").await;
    assert_eq!(r.json()["total_hits"], 0, "{r}");
}

#[tokio::test]
async fn a_new_version_is_picked_up_without_a_restart_and_cached_per_version() {
    let f = Fixture::new("versions").await;
    let first = f.publish_jsonl(&[doc(1, "Alpha", "alpha one", &[], "2026-01-01T00:00:00Z")]).await;
    // Check the manifest on every request: the same mechanism as the 30 s default, without waiting.
    let s = f.search(Duration::ZERO).await;
    let app = app(&s);
    // The first call only starts connecting to Valkey (BYPASS); wait until the cache answers.
    for _ in 0..200 {
        if app.get("/search?q=warmup").await.header("x-cache") != Some("BYPASS") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = app.get("/search?q=alpha").await;
    assert_eq!((r.json()["total_hits"].as_u64(), r.header("x-cache")), (Some(1), Some("MISS")));
    assert_eq!(r.header("x-index-version"), Some(first.version.as_str()));
    assert_eq!(app.get("/search?q=alpha").await.header("x-cache"), Some("HIT"));

    let second = f
        .publish_jsonl(&[
            doc(1, "Alpha", "alpha one", &[], "2026-01-01T00:00:00Z"),
            doc(2, "Alpha two", "alpha two", &[], "2026-01-02T00:00:00Z"),
        ])
        .await;
    // The check runs in the background: requests get the old version until the new one is in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = app.get("/search?q=alpha").await;
        if r.header("x-index-version") == Some(second.version.as_str()) {
            break r;
        }
        assert_eq!(r.json()["total_hits"], 1, "the old version answers until the switch");
        assert!(std::time::Instant::now() < deadline, "the new version never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v = r.json();
    assert_eq!(v["total_hits"], 2, "{v}");
    assert_eq!(v["index_version"], second.version.as_str());
    assert_eq!(r.header("x-cache"), Some("MISS"), "a new version never serves the old answer");
}

#[tokio::test]
async fn a_corrupt_bundle_is_503_or_keeps_the_old_version() {
    let f = Fixture::new("corrupt").await;
    let cfg = service_config();
    let storage = quiver::storage::Storage::new(&cfg).await.unwrap();
    let junk = f.dir.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("index.tar.zst"), b"not a zstd stream at all").unwrap();
    let publish_junk = || async {
        let files = [("index.tar.zst".to_string(), junk.join("index.tar.zst"))];
        quiver::artifact::publish(
            &storage,
            &f.prefix,
            &quiver::artifact::new_version(),
            &files,
            quiver::search::IndexMeta {
                doc_count: 0,
                bundle_size: 24,
                index_bytes: 0,
                source: "junk".into(),
                schema: String::new(),
                index_ms: 0.0,
            },
        )
        .await
        .unwrap()
    };

    // Nothing loaded yet: a bundle whose checksum matches but that does not unpack is a 503.
    publish_junk().await;
    let s = f.search(Duration::from_secs(3600)).await;
    let r = app(&s).get("/search?q=fox").await;
    assert_eq!(r.status, 503, "{r}");
    let v = r.json();
    assert_eq!(v["dependency"], "index");
    assert_eq!(v["reason"], "corrupt", "{v}");

    // A good version loads; a corrupt one published after it leaves the good one serving.
    let good = f.publish_jsonl(&small_corpus()).await;
    s.expire();
    let r = app(&s).get("/search?q=fox").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-index-version"), Some(good.version.as_str()));
    publish_junk().await;
    s.expire();
    let r = app(&s).get("/search?q=foxes").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-index-version"), Some(good.version.as_str()));

    // A bundle that does not match its manifest's checksum is refused before unpacking.
    let good = f.publish_jsonl(&small_corpus()).await;
    let key = format!("{}/{}/index.tar.zst", f.prefix, good.version);
    let body = aws_sdk_s3::primitives::ByteStream::from_static(b"tampered");
    storage.client.put_object().bucket(&storage.bucket).key(&key).body(body).send().await.unwrap();
    let fresh = Search::with_settings(
        &cfg,
        SearchSettings {
            prefix: f.prefix.clone(),
            dir: f.dir.join("fresh"),
            check_every: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let r = app(&fresh).get("/search?q=fox").await;
    assert_eq!(r.status, 503, "{r}");
    assert!(r.json()["detail"].as_str().unwrap().contains("corrupt"), "{r}");
}

#[tokio::test]
async fn the_reference_corpus_returns_the_hits_it_implies() {
    let f = Fixture::new("reference").await;
    let report = f
        .indexer
        .run(Source::Corpus { corpus: Corpus::Reference, docs: 10_000, seed: 0 })
        .await
        .unwrap();
    assert_eq!(report.docs, 10_000);
    let s = f.search(Duration::from_secs(3600)).await;
    let app = app(&s);
    // Every title is "Doc i - Performance Optimization".
    let v = app.get("/search?q=performance").await.json();
    assert_eq!(v["total_hits"], 10_000, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 10);
    // Document i is about topic i % 5.
    let v = app.get("/search?q=%22query+planning%22").await.json();
    assert_eq!(v["total_hits"], 2_000);
    let v = app.get("/search?q=performance&tag=memory").await.json();
    assert_eq!(v["total_hits"], 2_000);
    // Document i was created i hours after 2026-01-01T00:00:00Z: one day is 24 documents.
    let v = app.get("/search?q=performance&from=2026-01-01&to=2026-01-01").await.json();
    assert_eq!(v["total_hits"], 24);
}

#[tokio::test]
async fn the_lambda_event_is_served() {
    let f = Fixture::new("event").await;
    f.indexer.run(Source::Corpus { corpus: Corpus::Reference, docs: 100, seed: 0 }).await.unwrap();
    let s = f.search(Duration::from_secs(3600)).await;
    let req = lambda_http::request::from_str(include_str!("../../../events/search.json")).unwrap();
    let r = app(&s).call(req).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["total_hits"], 100);
    assert_eq!(v["results"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn s3_down_is_503_and_valkey_down_is_a_bypass() {
    let f = Fixture::new("down").await;
    f.publish_jsonl(&small_corpus()).await;
    let settings = |d: &str| SearchSettings {
        prefix: f.prefix.clone(),
        dir: f.dir.join(d),
        check_every: Duration::from_secs(3600),
    };

    let mut cfg = service_config();
    cfg.s3_endpoint = Some(format!("http://127.0.0.1:{}", free_port()));
    cfg.s3_timeout = Duration::from_millis(1500);
    let s = Search::with_settings(&cfg, settings("no-s3")).await.unwrap();
    let r = app(&s).get("/search?q=fox").await;
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(r.json()["dependency"], "s3");

    let mut cfg = service_config();
    cfg.valkey_url = Some(format!("redis://127.0.0.1:{}", free_port()));
    let s = Search::with_settings(&cfg, settings("no-valkey")).await.unwrap();
    let r = app(&s).get("/search?q=fox").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
}
