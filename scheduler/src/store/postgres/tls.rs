//! TLS for the PostgreSQL store: tokio-postgres's `MakeTlsConnect` over
//! tokio-rustls (rustls 0.23 with the ring provider, the one lapin
//! already brings), checking the server's certificate as the address's
//! `sslmode` asks (`address.rs`): not at all (`prefer`, `require`), its
//! chain (`verify-ca`, or `sslrootcert` given with a weaker mode, as
//! libpq does), or its chain and the host's name in it (`verify-full`).
//!
//! The roots are read once, when the store opens: a CA file that is
//! missing, unreadable or holds no PEM certificate stops the start, and a
//! new file is taken by a restart. Channel binding (SCRAM-SHA-256-PLUS) is
//! not offered; SCRAM-SHA-256 works as over plain TCP, and `verify-full`
//! already rules out a server in the middle.

use super::address::{RootCerts, SslMode, TlsSettings};
use crate::store::StoreError;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{self as pg_tls, ChannelBinding};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
        SignatureScheme,
        client::{
            WebPkiServerVerifier,
            danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        },
        crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    },
};

/// Makes each new connection's TLS session (cheap to clone: the rustls
/// configuration is shared). Given to the pool and to the connection
/// holding the partition locks alike.
#[derive(Clone)]
pub(super) struct MakeTls {
    config: Arc<ClientConfig>,
    /// What is checked, for errors: `sslmode=verify-full, sslrootcert=...`.
    checks: Arc<str>,
}

fn bad(why: String) -> StoreError {
    StoreError::Url(why)
}

impl MakeTls {
    /// The TLS settings made ready: the roots read and checked.
    pub(super) fn new(settings: &TlsSettings) -> Result<MakeTls, StoreError> {
        let provider = Arc::new(ring::default_provider());
        let roots = match (&settings.roots, settings.mode) {
            (Some(roots), _) => Some(load_roots(roots)?),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
                Some(load_roots(&RootCerts::System)?)
            }
            (None, _) => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(AnyCertificate(provider.clone())),
            Some(roots) => {
                let chain =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| bad(format!("TLS roots: {e}")))?;
                if settings.mode == SslMode::VerifyFull {
                    chain
                } else {
                    Arc::new(AnyName(chain))
                }
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends, and what PostgreSQL 17 requires for
        // `sslnegotiation=direct`; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeTls {
            config: Arc::new(config),
            checks: checks(settings).into(),
        })
    }
}

/// `sslmode=..., <what is trusted>`, for errors and logs.
pub(super) fn checks(settings: &TlsSettings) -> String {
    let roots = match (&settings.roots, settings.mode) {
        (_, SslMode::Disable) => return "sslmode=disable".into(),
        (Some(RootCerts::File(p)), _) => format!("sslrootcert={}", p.display()),
        (Some(RootCerts::System), _) | (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
            "the system's roots".into()
        }
        (None, _) => "certificate not checked".into(),
    };
    format!("sslmode={}, {roots}", settings.mode.word())
}

/// Reads the certificates to trust.
fn load_roots(which: &RootCerts) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match which {
        RootCerts::File(path) => {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("sslrootcert {shown}: cannot read it: {e}")))?;
            for (n, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let cert =
                    cert.map_err(|e| bad(format!("sslrootcert {shown}: not valid PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    bad(format!(
                        "sslrootcert {shown}: certificate {} is not usable: {e}",
                        n + 1
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(bad(format!(
                    "sslrootcert {shown}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                )));
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.first().map(|e| format!(" ({e})"));
                return Err(bad(format!(
                    "no system root certificates found{}: give sslrootcert=/path/to/ca.pem",
                    why.unwrap_or_default()
                )));
            }
        }
    }
    Ok(roots)
}

/// `require` and `prefer` without roots: any certificate, as libpq. The
/// handshake's signatures are still checked against it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain as webpki checks it, whatever name the
/// certificate is for. webpki checks the chain first and the name last,
/// so a name error means the chain was good.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why a TLS connection could not be made, with the host and what was
/// checked (tokio-postgres puts it after "error performing TLS
/// handshake: ").
#[derive(Debug)]
pub(super) struct TlsError(String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl<S> pg_tls::MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, TlsError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            TlsError(format!(
                "TLS with {host} ({}): not a host name TLS can use: {e}",
                self.checks
            ))
        })?;
        Ok(Connect {
            connector: TlsConnector::from(self.config.clone()),
            name,
            checks: self.checks.clone(),
        })
    }
}

/// One connection's handshake.
pub(super) struct Connect {
    connector: TlsConnector,
    name: ServerName<'static>,
    checks: Arc<str>,
}

impl<S> pg_tls::TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let host = self.name.to_str().into_owned();
            self.connector
                .connect(self.name, stream)
                .await
                .map(TlsStream)
                .map_err(|e| handshake_error(&e, &host, &self.checks))
        })
    }
}

/// The handshake's failure in words: which check refused the server.
fn handshake_error(e: &io::Error, host: &str, checks: &str) -> TlsError {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let why = match refused {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not signed by a trusted CA".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for the name {host}")
            }
            _ => "the server's certificate was refused".to_owned(),
        },
        _ => "the handshake failed".to_owned(),
    };
    TlsError(format!("TLS with {host} ({checks}): {why}: {e}"))
}

/// A TLS connection to PostgreSQL.
pub(super) struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> pg_tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{MakeTls, RootCerts, SslMode, TlsSettings, checks};
    use std::path::PathBuf;

    fn with_file(mode: SslMode, path: PathBuf) -> TlsSettings {
        TlsSettings {
            mode,
            roots: Some(RootCerts::File(path)),
        }
    }

    fn refusal(settings: &TlsSettings) -> String {
        match MakeTls::new(settings) {
            Ok(_) => panic!("{settings:?} should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = refusal(&with_file(SslMode::VerifyFull, missing.clone()));
        assert!(e.contains("cannot read it"), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");

        for (name, text, says) in [
            ("empty.pem", "", "holds no PEM certificate"),
            (
                "text.pem",
                "not a certificate\n",
                "holds no PEM certificate",
            ),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no PEM certificate",
            ),
            (
                "base64.pem",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                "unended.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n",
                "not valid PEM",
            ),
            (
                "der.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate 1 is not usable",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            // Read whatever the mode, even one that would not use it.
            for mode in [SslMode::VerifyFull, SslMode::Require, SslMode::Disable] {
                let e = refusal(&with_file(mode, path.clone()));
                assert!(e.contains(says), "{name}: {e}");
            }
        }
    }

    #[test]
    fn modes_without_roots_need_no_file() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            assert!(MakeTls::new(&TlsSettings { mode, roots: None }).is_ok());
        }
    }

    #[test]
    fn says_what_is_checked() {
        let file = PathBuf::from("/x/ca.pem");
        for (settings, expected) in [
            (
                with_file(SslMode::VerifyFull, file.clone()),
                "sslmode=verify-full, sslrootcert=/x/ca.pem",
            ),
            (
                TlsSettings {
                    mode: SslMode::VerifyCa,
                    roots: None,
                },
                "sslmode=verify-ca, the system's roots",
            ),
            (
                TlsSettings {
                    mode: SslMode::Require,
                    roots: None,
                },
                "sslmode=require, certificate not checked",
            ),
            (with_file(SslMode::Disable, file), "sslmode=disable"),
        ] {
            assert_eq!(checks(&settings), expected);
        }
    }
}
