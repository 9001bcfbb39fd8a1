//! TLS for PostgreSQL connections, following libpq's `sslmode`:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `prefer` (default), `allow` | when the server offers it | no |
//! | `require` | yes | no (against `sslrootcert` when given, as libpq does) |
//! | `verify-ca` | yes | chain, against `sslrootcert` or the Mozilla roots |
//! | `verify-full` | yes | chain and host name |
//!
//! `prefer` and `require` encrypt without proving who the server is, exactly
//! as libpq does; use `verify-full` across any network you do not control.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    Disable,
    /// Encrypt when offered, no certificate check.
    Prefer {
        root_cert: Option<String>,
    },
    /// Always encrypt, no certificate check (unless a root certificate is given).
    Require {
        root_cert: Option<String>,
    },
    VerifyCa {
        root_cert: Option<String>,
    },
    VerifyFull {
        root_cert: Option<String>,
    },
}

/// A URL with the TLS parameters taken out (tokio-postgres knows only some).
pub struct SplitUrl {
    pub url: String,
    pub tls: Tls,
}

/// Takes `sslmode` and `sslrootcert` out of a libpq URL.
pub fn split_url(raw: &str) -> Result<SplitUrl, PgError> {
    let mut url =
        url::Url::parse(raw.trim()).map_err(|e| PgError::Config(format!("not a URL ({e})")))?;
    let mut mode = None;
    let mut root_cert = None;
    let rest: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match &*k {
            "sslmode" => {
                mode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(v.into_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    let tls = match mode.as_deref().unwrap_or("prefer") {
        "disable" => Tls::Disable,
        "allow" | "prefer" => Tls::Prefer { root_cert },
        "require" => Tls::Require { root_cert },
        "verify-ca" => Tls::VerifyCa { root_cert },
        "verify-full" => Tls::VerifyFull { root_cert },
        other => {
            return Err(PgError::Config(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    Ok(SplitUrl {
        url: url.to_string(),
        tls,
    })
}

impl Tls {
    pub fn ssl_mode(&self) -> SslMode {
        match self {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer { .. } => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }

    /// The TLS connector, or `None` for `disable`.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, PgError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let config = match self {
            Tls::Disable => return Ok(None),
            Tls::Prefer { root_cert: None } | Tls::Require { root_cert: None } => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            Tls::Prefer {
                root_cert: Some(file),
            }
            | Tls::Require {
                root_cert: Some(file),
            }
            | Tls::VerifyCa {
                root_cert: Some(file),
            } => {
                let verifier = chain_verifier(roots(Some(file))?, provider)?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
                    .with_no_client_auth()
            }
            Tls::VerifyCa { root_cert: None } => {
                let verifier = chain_verifier(roots(None)?, provider)?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
                    .with_no_client_auth()
            }
            Tls::VerifyFull { root_cert } => builder
                .with_root_certificates(roots(root_cert.as_deref())?)
                .with_no_client_auth(),
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

fn roots(file: Option<&str>) -> Result<rustls::RootCertStore, PgError> {
    let mut store = rustls::RootCertStore::empty();
    match file {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| PgError::Config(format!("sslrootcert {path}: {e}")))?;
            let mut found = 0;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|e| PgError::Config(format!("sslrootcert {path}: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| PgError::Config(format!("sslrootcert {path}: {e}")))?;
                found += 1;
            }
            if found == 0 {
                return Err(PgError::Config(format!(
                    "sslrootcert {path}: no PEM certificate in it"
                )));
            }
        }
    }
    Ok(store)
}

fn chain_verifier(
    roots: rustls::RootCertStore,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, PgError> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

fn supported_schemes(provider: &rustls::crypto::CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// libpq's `prefer` / `require`: the connection is encrypted, the server's
/// certificate is not checked. The handshake signature still is, so the
/// session key belongs to whoever presented the certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(&self.0)
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name
/// is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
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
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let s =
            split_url("postgres://u:p@db:5432/gh?sslmode=verify-full&connect_timeout=3").unwrap();
        assert_eq!(s.url, "postgres://u:p@db:5432/gh?connect_timeout=3");
        assert_eq!(s.tls, Tls::VerifyFull { root_cert: None });
        let s = split_url("postgresql://u@db/gh").unwrap();
        assert_eq!(s.url, "postgresql://u@db/gh");
        assert_eq!(s.tls, Tls::Prefer { root_cert: None });
        let s = split_url("postgres://u@db/gh?sslmode=require&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(
            s.tls,
            Tls::Require {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(
            split_url("postgres://u@db/gh?sslmode=disable").unwrap().tls,
            Tls::Disable
        );
        assert!(split_url("postgres://u@db/gh?sslmode=maybe").is_err());
        assert!(Tls::Disable.connector().unwrap().is_none());
        for tls in [
            Tls::Prefer { root_cert: None },
            Tls::Require { root_cert: None },
            Tls::VerifyCa { root_cert: None },
            Tls::VerifyFull { root_cert: None },
        ] {
            assert!(tls.connector().unwrap().is_some(), "{tls:?}");
        }
        assert!(Tls::VerifyFull {
            root_cert: Some("/nonexistent/ca.pem".into())
        }
        .connector()
        .is_err());
    }
}
