//! TLS of federation: the listener's certificate (from PEM files, or self-signed for
//! development), the roots outbound connections trust (the system's plus a configured
//! CA bundle, e.g. a prefecture's private CA), and a TLS listener for `axum::serve`.
//!
//! One crypto provider, aws-lc-rs (the one reqwest already uses), is named explicitly
//! everywhere, so that no process-wide default has to be installed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a peer may take to complete the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider of every TLS configuration in kairan.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file, in order (leaf first for a chain). An error names the
/// file and says what is wrong with it.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{} holds no usable PEM private key: {e}", path.display()))
}

/// The listener's TLS configuration from a certificate chain and its key.
pub fn server_config(certificate: &Path, private_key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certificates(certificate).map_err(anyhow::Error::msg)?;
    let key = read_private_key(private_key).map_err(anyhow::Error::msg)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "the TLS certificate {} and key {} do not go together: {e}",
                certificate.display(),
                private_key.display()
            )
        })?;
    // axum serves HTTP/1.1 only (its http2 feature is off).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The self-signed certificate for development: `DATA_DIR/federation-self-signed.{crt,key}`
/// for the host part of the server name, generated on first use and reused after.
pub fn self_signed(data_dir: &Path, server_name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = data_dir.join("federation-self-signed.crt");
    let key_path = data_dir.join("federation-self-signed.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let host = host_of(server_name);
    let key = rcgen::KeyPair::generate().map_err(|e| anyhow::anyhow!("generating a TLS key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])
        .map_err(|e| anyhow::anyhow!("a certificate for {host}: {e}"))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    let cert = params.self_signed(&key).map_err(|e| anyhow::anyhow!("signing a certificate for {host}: {e}"))?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display()))?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), host, "generated a self-signed federation certificate");
    Ok((cert_path, key_path))
}

/// The host part of a server name: `pref.example:8448` → `pref.example`, `[::1]:8448` → `::1`.
pub fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => server_name,
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The TLS configuration of outbound federation: system roots plus `ca_bundle` (when not
/// empty), or no verification at all when `verify` is false.
pub fn client_config(ca_bundle: &Path, verify: bool) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root certificate could not be loaded");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if !ca_bundle.as_os_str().is_empty() {
            for cert in read_certificates(ca_bundle).map_err(anyhow::Error::msg)? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("federation.ca_bundle {}: a certificate: {e}", ca_bundle.display()))?;
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no trusted root certificates: no system roots were found and federation.ca_bundle is empty, \
                 so no other server's certificate can be verified"
            );
        }
        tracing::debug!(system = added, total = roots.len(), "federation TLS roots loaded");
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `verify_tls = false`: any certificate is accepted (the handshake signatures are still
/// checked, so the peer holds the key of the certificate it shows, whatever that is).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS listener for `axum::serve`. Handshakes run in their own tasks, so a slow or
/// silent peer delays nobody else; only finished handshakes reach `accept`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> anyhow::Result<Self> {
        let tcp = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local_addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "federation listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "federation listener: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "federation listener: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local_addr, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(host_of("pref.example"), "pref.example");
        assert_eq!(host_of("pref.example:8448"), "pref.example");
        assert_eq!(host_of("127.0.0.1:8448"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8448"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
    }

    #[test]
    fn self_signed_certificate_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "localhost:8448").unwrap();
        let first = std::fs::read(&cert).unwrap();
        server_config(&cert, &key).unwrap();
        let (cert, _) = self_signed(dir.path(), "localhost:8448").unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(read_certificates(&missing).unwrap_err().contains("nope.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(read_certificates(&empty).unwrap_err().contains("no PEM certificate"));
        assert!(read_private_key(&empty).is_err());
    }
}
