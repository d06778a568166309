//! TLS to the database through rustls (with the `ring` provider): a small
//! [`MakeTlsConnect`] over `tokio-rustls`, and the URL's TLS settings.
//!
//! `sslmode=require` and `verify-full` check the server's certificate chain and its name;
//! `verify-ca` checks the chain only. Unlike libpq, `require` does not accept any certificate:
//! a connection that carries the password should not be open to whoever sits in between.
//! The trusted roots are the file `sslrootcert=FILE` names, else the Mozilla roots
//! (webpki-roots). `disable`, `prefer` and no `sslmode` connect without TLS.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// What the URL asks of TLS, taken out of it before tokio-postgres parses the rest (it knows
/// neither `sslrootcert` nor `verify-ca`/`verify-full`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode` as written, when it asks for TLS (`require`, `verify-ca`, `verify-full`).
    pub mode: Option<String>,
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether the server's name must match its certificate.
    fn verify_name(&self) -> bool {
        self.mode.as_deref() != Some("verify-ca")
    }
}

/// Splits `url` (a URL or a `key=value` connection string) into the text tokio-postgres
/// parses (`verify-ca`/`verify-full` become `require`, `sslrootcert` is removed) and the
/// TLS settings.
pub fn split_tls_settings(url: &str) -> (String, TlsSettings) {
    let mut settings = TlsSettings::default();
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match key.trim() {
            "sslrootcert" => {
                settings.root_cert = Some(PathBuf::from(value));
                None
            }
            "sslmode" if matches!(value, "require" | "verify-ca" | "verify-full") => {
                settings.mode = Some(value.to_owned());
                Some("sslmode=require".to_owned())
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), settings);
        };
        let kept: Vec<String> = query
            .split('&')
            .filter_map(|pair| match pair.split_once('=') {
                Some((key, value)) => keep(key, &percent_decode(value)),
                None => Some(pair.to_owned()),
            })
            .collect();
        let text = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (text, settings)
    } else {
        let kept: Vec<String> = url
            .split_whitespace()
            .filter_map(|pair| match pair.split_once('=') {
                Some((key, value)) => keep(key, value),
                None => Some(pair.to_owned()),
            })
            .collect();
        (kept.join(" "), settings)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why TLS could not be set up; names the file, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("could not read the root certificates in {} (sslrootcert): {source}", path.display())]
    RootCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} (sslrootcert) holds no usable certificate", path.display())]
    NoRootCert { path: PathBuf },
    #[error("could not set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Connects over TLS with one rustls configuration.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    /// The trusted roots, as a person names them.
    roots: Arc<str>,
}

impl MakeRustlsConnect {
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match &settings.root_cert {
            Some(path) => add_pem_roots(&mut roots, path)?,
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                inner: verifier,
                verify_name: settings.verify_name(),
            }));
        Ok(Self {
            config: Arc::new(builder.with_no_client_auth()),
            roots: Arc::from(match &settings.root_cert {
                Some(path) => format!("sslrootcert={}", path.display()),
                None => "the public roots of webpki-roots; no sslrootcert given".to_owned(),
            }),
        })
    }
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::RootCert {
            path: path.to_path_buf(),
            source,
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoRootCert {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The webpki verifier, with the name check left out for `verify-ca`.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    verify_name: bool,
}

/// rustls says "invalid peer certificate: UnknownIssuer"; say what to change instead.
fn explain_untrusted(error: io::Error, roots: &str) -> io::Error {
    let unknown_issuer = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| {
            matches!(
                inner,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            )
        });
    if unknown_issuer {
        io::Error::other(UntrustedIssuer(roots.to_owned()))
    } else {
        error
    }
}

/// UnknownIssuer, said so that it points at the setting to fix.
#[derive(Debug)]
struct UntrustedIssuer(String);

impl std::fmt::Display for UntrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate is not signed by a trusted root ({}); set \
             sslrootcert=FILE to the CA that signed it",
            self.0
        )
    }
}

impl std::error::Error for UntrustedIssuer {}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            roots: self.roots.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    roots: Arc<str>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let stream = connector
                .connect(self.name, stream)
                .await
                .map_err(|error| explain_untrusted(error, &self.roots))?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS connection to the server. Without channel binding: SCRAM then runs without `-PLUS`,
/// which the server accepts unless it is configured to require it.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_urls_and_connection_strings() {
        let (text, settings) = split_tls_settings(
            "postgres://u:p@db:5432/baton?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(
            text,
            "postgres://u:p@db:5432/baton?sslmode=require&application_name=x"
        );
        assert_eq!(settings.mode.as_deref(), Some("verify-ca"));
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!settings.verify_name());

        let (text, settings) = split_tls_settings("host=db sslmode=require sslrootcert=/ca.pem");
        assert_eq!(text, "host=db sslmode=require");
        assert_eq!(settings.mode.as_deref(), Some("require"));
        assert!(settings.verify_name());

        let (text, settings) = split_tls_settings("postgres://db/baton?sslmode=prefer");
        assert_eq!(text, "postgres://db/baton?sslmode=prefer");
        assert_eq!(settings, TlsSettings::default());
    }
}
