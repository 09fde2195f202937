//! The HTTP listener: plain TCP, or TLS with rustls when `[http.tls]` names a certificate and
//! its key.

use anyhow::Context;
use bulwark_config::HttpConfig;
use poem::listener::{
    AcceptorExt, BoxAcceptor, Listener, RustlsCertificate, RustlsConfig, TcpListener,
};

/// Binds the configured address and returns the acceptor the server runs on, TLS when
/// configured. Unreadable or invalid certificate or key files fail here, naming the key.
pub async fn bind(http: &HttpConfig) -> anyhow::Result<BoxAcceptor> {
    let listener = TcpListener::bind(http.socket_addr());
    let Some(tls) = &http.tls else {
        let acceptor = listener
            .into_acceptor()
            .await
            .with_context(|| format!("failed to listen on {}", http.addr))?;
        return Ok(acceptor.boxed());
    };
    install_crypto_provider();
    let cert = std::fs::read(&tls.cert_file)
        .with_context(|| format!("failed to read http.tls.cert_file {}", tls.cert_file))?;
    let key = std::fs::read(&tls.key_file)
        .with_context(|| format!("failed to read http.tls.key_file {}", tls.key_file))?;
    let config = RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert).key(key));
    let acceptor = listener
        .rustls(config)
        .into_acceptor()
        .await
        .with_context(|| {
            format!(
                "failed to listen with TLS on {} (check http.tls.cert_file and http.tls.key_file)",
                http.addr
            )
        })?;
    Ok(acceptor.boxed())
}

/// Makes ring the process's rustls provider, as for every TLS client of this process (the
/// database, the broker, the providers), before the server's TLS config is built: left
/// unset, the server would install a second provider as the process default.
fn install_crypto_provider() {
    // An error means a provider is installed already, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
