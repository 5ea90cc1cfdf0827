//! TLS for the Valkey and PostgreSQL clients: one rustls crypto provider per process, CA files read
//! once at init, and the tokio-postgres connector that `quiver::pg` hands its pool.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::config::ConfigError;

/// The process-wide rustls provider, installed on first use. aws-lc-rs is what the AWS SDK links
/// already. redis-rs builds its `ClientConfig` from the process default, and rustls panics at the
/// first handshake when there is none (or when both providers are compiled in and none is chosen).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    // Err means one is installed already (by us or by the embedding program): that one is used.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// `N` bytes from the provider's secure random generator (the OS's), for lock tokens and keys.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    provider().secure_random.fill(&mut b).expect("the OS random generator works");
    b
}

/// A PEM file of CA certificates, as its bytes and as trust anchors; errors name `var` and the path.
pub(crate) fn ca_file(
    var: &'static str,
    path: &str,
) -> Result<(Vec<u8>, RootCertStore), ConfigError> {
    let problem = |p: String| ConfigError { var, problem: p };
    let pem = std::fs::read(path).map_err(|e| problem(format!("cannot read {path}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| problem(format!("{path} is not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            problem(format!("{path} holds a certificate that is not a usable CA: {e}"))
        })?;
    }
    if roots.is_empty() {
        return Err(problem(format!("{path} holds no PEM certificate")));
    }
    Ok((pem, roots))
}

#[cfg(feature = "pg")]
pub(crate) use postgres::{MakeTls, Verify};

#[cfg(feature = "pg")]
mod postgres {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
    use tokio_postgres::Socket;

    /// How much of the server's certificate is checked: libpq's `require`, `verify-ca`, `verify-full`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Verify {
        /// Encrypted, but any certificate is accepted (libpq's `prefer` and `require`).
        Nothing,
        /// The chain must lead to a trusted CA; the host name is not compared.
        Chain,
        /// The chain, and the host name against the certificate.
        Full,
    }

    /// The tokio-postgres TLS connector. With `sslmode=disable` it is never called.
    #[derive(Clone)]
    pub(crate) struct MakeTls(Arc<ClientConfig>);

    impl MakeTls {
        /// `roots` are the trust anchors for `Chain` and `Full`: a CA file, or the Mozilla roots.
        pub(crate) fn new(
            verify: Verify,
            roots: Option<RootCertStore>,
        ) -> Result<Self, rustls::Error> {
            let provider = super::provider();
            let roots = roots.unwrap_or_else(|| RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            let builder = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?;
            let mut config = match verify {
                Verify::Full => builder.with_webpki_verifier(webpki),
                partial => {
                    builder.dangerous().with_custom_certificate_verifier(Arc::new(Partial {
                        webpki,
                        chain: partial == Verify::Chain,
                    }))
                }
            }
            .with_no_client_auth();
            // Required by PostgreSQL 17 for `sslnegotiation=direct`, harmless otherwise.
            config.alpn_protocols = vec![b"postgresql".to_vec()];
            Ok(MakeTls(Arc::new(config)))
        }
    }

    /// `require` and `verify-ca`: the certificate is accepted without (or without its name being)
    /// checked, but the handshake signatures still are, so the session is encrypted to whoever holds
    /// the certificate's key.
    #[derive(Debug)]
    struct Partial {
        webpki: Arc<WebPkiServerVerifier>,
        chain: bool,
    }

    impl ServerCertVerifier for Partial {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if !self.chain {
                return Ok(ServerCertVerified::assertion());
            }
            // webpki checks the chain first and the name last, so a name error means the chain held.
            match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.webpki.supported_verify_schemes()
        }
    }

    impl MakeTlsConnect<Socket> for MakeTls {
        type Stream = Stream;
        type TlsConnect = Connect;
        type Error = io::Error;

        fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
            // A Unix socket has no name; tokio-postgres never asks it for TLS.
            Ok(Connect {
                config: self.0.clone(),
                name: ServerName::try_from(host.to_string()).ok(),
            })
        }
    }

    pub(crate) struct Connect {
        config: Arc<ClientConfig>,
        name: Option<ServerName<'static>>,
    }

    impl TlsConnect<Socket> for Connect {
        type Stream = Stream;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

        fn connect(self, socket: Socket) -> Self::Future {
            Box::pin(async move {
                let name = self.name.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "TLS needs a host name or an IP address",
                    )
                })?;
                Ok(Stream(
                    tokio_rustls::TlsConnector::from(self.config).connect(name, socket).await?,
                ))
            })
        }
    }

    /// A TLS session to PostgreSQL. No channel binding is offered, so SCRAM runs without `-PLUS`:
    /// under `verify-full` the certificate check is what authenticates the server.
    pub(crate) struct Stream(tokio_rustls::client::TlsStream<Socket>);

    impl TlsStream for Stream {
        fn channel_binding(&self) -> ChannelBinding {
            ChannelBinding::none()
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}
