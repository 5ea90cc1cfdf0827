//! The embedded S3-compatible server: s3s-fs over a local directory, speaking real S3 over HTTP
//! with SigV4 authentication. Used when no Docker engine is there to run MinIO.

use std::path::Path;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::env;

/// Serves `root` as S3 on `addr` until the process is stopped; each bucket is a directory.
pub async fn run(root: &Path, addr: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| anyhow::anyhow!("s3 root {}: {e:?}", root.display()))?;
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(
        env::var("AWS_ACCESS_KEY_ID")?,
        env::var("AWS_SECRET_ACCESS_KEY")?,
    ));
    let service = b.build();
    let root = std::sync::Arc::new(root.to_path_buf());
    // s3s-fs checks a conditional PUT's precondition and then writes, so two at once can both
    // pass (and leave one's body with the other's checksum). S3 decides them atomically: the
    // publisher lease and the manifest's compare-and-swap rely on it. Conditional PUTs (small:
    // leases and manifests) are therefore taken one at a time. s3s-fs ignores `If-Match` on a
    // DELETE, which the lease's release relies on; it is checked here, in the same line.
    let conditional = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("S3 server on http://{} over {}", listener.local_addr()?, root.display());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        // Without it, a small object's body waits for the ACK of its headers (Nagle), which the
        // client delays by up to 40 ms: every manifest GET would take 40 ms.
        let _ = socket.set_nodelay(true);
        let (service, conditional, root) = (service.clone(), conditional.clone(), root.clone());
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (service, conditional) = (service.clone(), conditional.clone());
                let root = root.clone();
                async move {
                    use hyper::service::Service;
                    let h = req.headers();
                    let call = |req| Service::call(&service, req);
                    if req.method() == hyper::Method::DELETE && h.contains_key("if-match") {
                        let _one_at_a_time = conditional.lock().await;
                        match delete_precondition(&root, &req).await {
                            Ok(()) => call(req).await,
                            Err(refused) => Ok(refused),
                        }
                    } else if req.method() == hyper::Method::PUT
                        && (h.contains_key("if-match") || h.contains_key("if-none-match"))
                    {
                        let _one_at_a_time = conditional.lock().await;
                        call(req).await
                    } else {
                        call(req).await
                    }
                }
            });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service);
            if let Err(e) = conn.await {
                tracing::debug!("s3 connection: {e}");
            }
        });
    }
}

/// `If-Match` of a DELETE (path-style, `/bucket/key`), which s3s-fs ignores: the object's ETag is
/// the MD5 of its content, as s3s-fs computes it for a single PUT. A mismatch, or no such object,
/// is S3's answer: 412 `PreconditionFailed` (404 for a missing object is S3's too, but the
/// publisher treats either as "not yours").
async fn delete_precondition<B>(
    root: &Path,
    req: &hyper::Request<B>,
) -> Result<(), hyper::Response<s3s::Body>> {
    use s3s::crypto::{Checksum, Md5};
    let wanted = req.headers()["if-match"].to_str().unwrap_or("").trim_matches('"').to_string();
    let path = percent_decode(req.uri().path().trim_start_matches('/'));
    // Only a plain relative key: never a path that leaves the root.
    let safe = !path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    let content = match safe {
        true => tokio::fs::read(root.join(&path)).await.ok(),
        false => None,
    };
    let etag =
        content.map(|c| Md5::checksum(&c).iter().map(|b| format!("{b:02x}")).collect::<String>());
    if wanted == "*" && etag.is_some() || etag.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PreconditionFailed</Code>\
                <Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
    Err(hyper::Response::builder()
        .status(412)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body.to_string()))
        .expect("a valid response"))
}

/// `%XX` escapes of a URI path, decoded (S3 keys are percent-encoded in path-style requests).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
