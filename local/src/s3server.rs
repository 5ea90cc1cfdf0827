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
    // s3s-fs checks a conditional PUT's precondition and then writes, so two at once can both
    // pass (and leave one's body with the other's checksum). S3 decides them atomically: the
    // publisher lease and the manifest's compare-and-swap rely on it. Conditional PUTs (small:
    // leases and manifests) are therefore taken one at a time.
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
        let (service, conditional) = (service.clone(), conditional.clone());
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (service, conditional) = (service.clone(), conditional.clone());
                async move {
                    use hyper::service::Service;
                    let h = req.headers();
                    let call = |req| Service::call(&service, req);
                    if req.method() == hyper::Method::PUT
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
