//! TLS for the server (rustls): a certificate chain and its key; with a client CA,
//! callers must also present a certificate signed by it (mutual TLS).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsArgs;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS configuration")]
    Invalid(#[source] tonic::transport::Error),
}

/// The server's TLS settings, or `None` to serve plaintext. The files are read and
/// checked here, at start-up, so a bad certificate stops the server before it listens.
pub fn server_config(args: &TlsArgs) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    // Building the acceptor parses the PEM files and checks the key matches.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(TlsError::Invalid)?;
    Ok(Some(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}
