//! The S3 client against the local S3 server (embedded s3s-fs, or MinIO under Docker).

use aws_sdk_s3::primitives::ByteStream;
use quiver::storage::Storage;
use quiver::testing::service_config;

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    let s3 = Storage::new(&service_config()).await.unwrap();
    s3.head_bucket().await.unwrap();
    let key = format!("tests/roundtrip-{}.txt", std::process::id());
    let body = b"quiver".repeat(1000);
    s3.client
        .put_object()
        .bucket(&s3.bucket)
        .key(&key)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3.client.get_object().bucket(&s3.bucket).key(&key).send().await.unwrap();
    let etag = got.e_tag().map(str::to_string);
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), &body[..]);
    assert!(etag.is_some());
    let listed =
        s3.client.list_objects_v2().bucket(&s3.bucket).prefix("tests/").send().await.unwrap();
    assert!(listed.contents().iter().any(|o| o.key() == Some(key.as_str())));
    s3.client.delete_object().bucket(&s3.bucket).key(&key).send().await.unwrap();
    let gone = s3.client.get_object().bucket(&s3.bucket).key(&key).send().await;
    assert!(gone.is_err());
}

#[tokio::test]
async fn a_missing_bucket_is_a_503_naming_s3() {
    let mut cfg = service_config();
    cfg.bucket = Some("no-such-bucket".into());
    let s3 = Storage::new(&cfg).await.unwrap();
    let e = s3.head_bucket().await.unwrap_err();
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("s3"), "{e}");
}
