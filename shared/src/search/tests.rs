use std::borrow::Cow;
use std::path::PathBuf;

use super::*;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("quiver-search-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn doc(id: u64, title: &str, body: &str, tags: &[&'static str], created_at: i64) -> Doc {
    Doc {
        id,
        title: title.into(),
        body: body.into(),
        tags: tags.iter().map(|t| Cow::Borrowed(*t)).collect(),
        created_at: Some(created_at),
    }
}

fn q(q: &str) -> SearchQuery<'_> {
    SearchQuery { q, limit: 10, offset: 0, tag: None, from: None, to: None }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any text, in Tantivy's syntax or not, is a result or a 400 naming `q`; never a panic.
    #[test]
    fn any_query_is_an_answer_or_a_400(text in ".{1,120}", limit in 1usize..20, offset in 0usize..50) {
        let h = handle();
        match h.search(&SearchQuery { q: &text, limit, offset, tag: None, from: None, to: None }) {
            Ok(r) => proptest::prop_assert!(r.hits.len() <= limit && r.total <= 3),
            Err(e) => {
                proptest::prop_assert_eq!(e.status().as_u16(), 400, "{}", e);
                proptest::prop_assert_eq!(e.problem().param, Some("q".to_string()));
            }
        }
    }
}

/// A three-document index, built once for the property tests.
fn handle() -> &'static IndexHandle {
    static H: std::sync::OnceLock<IndexHandle> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let dir = tmp("props");
        let docs = vec![
            doc(1, "Rust search", "Search engines in Rust are fast.", &["rust"], 100),
            doc(2, "Cooking", "Pasta and basil, no engines.", &["food"], 200),
            doc(3, "Engines", "Steam engines and search trees.", &["history"], 300),
        ];
        build(&dir, docs.into_iter().map(Ok), &BuildOptions::for_memory(Some(256))).unwrap();
        IndexHandle::open(&dir).unwrap()
    })
}

#[test]
fn build_pack_unpack_and_search() {
    let dir = tmp("roundtrip");
    let docs = vec![
        doc(
            1,
            "Rust & <Tantivy>",
            "Search engines in Rust are fast. Rust is safe.",
            &["rust"],
            100,
        ),
        doc(2, "Cooking", "A recipe with no engines at all, only pasta and basil.", &["food"], 200),
        doc(
            3,
            "Engines",
            "Steam engines and search trees, side by side.",
            &["rust", "history"],
            300,
        ),
    ];
    let built =
        build(&dir.join("index"), docs.into_iter().map(Ok), &BuildOptions::for_memory(Some(256)))
            .unwrap();
    assert_eq!(built.docs, 3);
    let size = pack(&dir.join("index"), &dir.join(BUNDLE)).unwrap();
    assert!(size > 0);
    let again = dir.join("again.tar.zst");
    assert_eq!(pack(&dir.join("index"), &again).unwrap(), size, "packing is deterministic");
    unpack(&dir.join(BUNDLE), &dir.join("open")).unwrap();
    let h = IndexHandle::open(&dir.join("open")).unwrap();
    assert_eq!(h.doc_count, 3);

    let r = h.search(&q("engines")).unwrap();
    assert_eq!(r.total, 3);
    let r = h.search(&q("rust")).unwrap();
    assert_eq!(r.hits[0].id, 1);
    assert!(r.hits[0].snippet.contains("<b>Rust</b>"), "{}", r.hits[0].snippet);
    assert_eq!(r.hits[0].title, "Rust & <Tantivy>");
    let r = h.search(&SearchQuery { tag: Some("rust"), ..q("engines") }).unwrap();
    assert_eq!(r.total, 2);
    let r =
        h.search(&SearchQuery { from: Some(150), to: Some(250), ..q("engines OR pasta") }).unwrap();
    assert_eq!(r.hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2]);
    // Parsed leniently: what is not valid (an unclosed group, an unknown field) is dropped from
    // the query rather than refused.
    assert!(h.search(&q("title:(")).is_ok());
    assert_eq!(h.search(&q("nosuchfield:engines")).unwrap().total, 0);
    // A window that ends before it starts holds nothing; a bound past what Tantivy can hold is
    // moved to its edge rather than panicking.
    let empty = SearchQuery { from: Some(250), to: Some(150), ..q("engines") };
    assert_eq!(h.search(&empty).unwrap().total, 0);
    let far = SearchQuery { from: Some(-(1 << 60)), to: Some(1 << 60), ..q("engines") };
    assert_eq!(h.search(&far).unwrap().total, h.search(&q("engines")).unwrap().total);
    assert_eq!(h.search(&q("nosuchfield:*")).unwrap().total, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_bundles_are_503() {
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("junk.tar.zst"), b"definitely not zstd").unwrap();
    let e = unpack(&dir.join("junk.tar.zst"), &dir.join("out")).unwrap_err();
    assert_eq!(e.status(), 503);
    assert!(IndexHandle::open(&dir.join("out")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn jsonl_errors_name_the_line_and_field() {
    let text = "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"tags\":[\"Rust\"],\"created_at\":\"2026-01-02T00:00:00Z\"}\n\n{\"id\":2,\"body\":\"x\"}\n";
    let docs: Vec<_> = JsonlDocs::new(text.as_bytes()).collect();
    let first = docs[0].as_ref().unwrap();
    assert_eq!(first.tags, vec![Cow::Borrowed("rust")]);
    assert_eq!(first.created_at, Some(1_767_312_000));
    let e = docs[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("line 3: title"), "{e}");
    let dup =
        "{\"id\":1,\"title\":\"a\",\"body\":\"b\"}\n{\"id\":1,\"title\":\"a\",\"body\":\"b\"}";
    let e = JsonlDocs::new(dup.as_bytes()).nth(1).unwrap().unwrap_err().to_string();
    assert!(e.contains("line 2: id"), "{e}");
    let e =
        parse_doc(br#"{"id":1,"title":"a","body":"b","tags":["a/b"]}"#, 9).unwrap_err().to_string();
    assert!(e.contains("line 9: tags[0]"), "{e}");
    let e = parse_doc(br#"{"id":1,"title":"a","body":"b","tag":"x"}"#, 4).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("line 4") && e.to_string().contains("`tag`"), "{e}");
}

#[test]
fn corpora_are_deterministic_and_shaped() {
    let r = Realistic::new(7);
    assert_eq!(r.doc(12), Realistic::new(7).doc(12));
    assert_ne!(r.doc(12), Realistic::new(8).doc(12));
    let words: usize = (0..500).map(|i| r.doc(i).body.split(' ').count()).sum();
    assert!((150 * 500..300 * 500).contains(&words), "mean length {}", words / 500);
    assert_eq!(vocab().words.len(), VOCABULARY);
    assert!(vocab().words.iter().any(|w| &**w == "performance"));
    let d = reference_doc(7);
    assert_eq!(d.title, "Doc 7 - Performance Optimization");
    assert_eq!(d.tags, vec![Cow::Borrowed("memory")]);
}

#[test]
fn snippets_fall_back_to_an_escaped_prefix() {
    assert_eq!(prefix("one two three", 7), "one");
    assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
}
