//! The libp2p TLS handshake on rustls: our certificate carrying the libp2p
//! key, the verifier that checks the peer's, TLS 1.3 only, AES-GCM first.

use std::sync::Arc;

use libp2p::{PeerId, identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::*;

/// TLS 1.3 suites, AES-GCM first: the server takes the client's order, so this is
/// the cipher two Shoal nodes agree on. ChaCha20 stays for peers that ask for it.
pub(super) fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider
}

pub(super) fn tls_error(e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(e.to_string())
}

/// The quinn client and server configurations for `keypair`.
pub(super) fn quinn_configs(
    keypair: &identity::Keypair,
    config: &QuicConfig,
) -> Result<(quinn::ClientConfig, quinn::ServerConfig), QuicError> {
    let (cert, key) = libp2p::tls::certificate::generate(keypair).map_err(tls_error)?;
    let provider = Arc::new(provider());
    let versions = &[&rustls::version::TLS13];
    // rustls's own key loaders would parse the certificate with webpki, which refuses
    // the critical libp2p extension; a resolver hands it out as it is.
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(tls_error)?;
    let own = Arc::new(OwnCertificate(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signing_key,
    ))));

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCertVerifier))
        .with_client_cert_resolver(own.clone());
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(tls_error)?
        .with_client_cert_verifier(Arc::new(PeerCertVerifier))
        .with_cert_resolver(own);
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(0u32.into())
        .max_concurrent_bidi_streams(config.max_concurrent_streams.into())
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_idle_timeout(Some(
            config
                .max_idle_timeout
                .try_into()
                .map_err(|_| QuicError::Config("idle timeout out of range"))?,
        ))
        .allow_spin(false)
        .stream_receive_window(config.stream_receive_window.into())
        .receive_window(config.receive_window.into())
        .send_window(config.send_window);
    let transport = Arc::new(transport);

    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport.clone());
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport);
    // Peers are found by the address they announce; a migrating peer reconnects.
    server.migration(false);
    Ok((client, server))
}

/// Our one certificate, presented on both sides of every handshake.
#[derive(Debug)]
pub(super) struct OwnCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Checks the libp2p certificate rules on both sides of the handshake: exactly one
/// certificate, self-signed, carrying a libp2p key that signed the certificate's key.
/// Which `PeerId` it belongs to is the swarm's business (it refuses a dial that reaches
/// another peer than the one in the address).
#[derive(Debug)]
pub(super) struct PeerCertVerifier;

pub(super) fn check_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "a libp2p peer presents exactly one certificate".into(),
        ));
    }
    libp2p::tls::certificate::parse(end_entity)
        .map(|_| ())
        .map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })
}

pub(super) fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let cert = libp2p::tls::certificate::parse(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    cert.verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

/// The schemes a libp2p certificate's key may sign the handshake with.
pub(super) fn schemes() -> Vec<SignatureScheme> {
    use SignatureScheme::*;
    vec![
        ECDSA_NISTP256_SHA256,
        ECDSA_NISTP384_SHA384,
        ED25519,
        RSA_PSS_SHA256,
        RSA_PSS_SHA384,
        RSA_PSS_SHA512,
        RSA_PKCS1_SHA256,
        RSA_PKCS1_SHA384,
        RSA_PKCS1_SHA512,
    ]
}

pub(super) fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// The signature half of both verifier traits: the same on either side.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(tls12_refused())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            check_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            schemes()
        }
    };
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_checks!();
}

impl ClientCertVerifier for PeerCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_checks!();
}

/// The remote's `PeerId`, from the certificate the handshake already verified.
pub(super) fn remote_peer(connection: &quinn::Connection) -> Result<PeerId, QuicError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(QuicError::NoIdentity)?;
    let cert = certs.first().ok_or(QuicError::NoIdentity)?;
    let cert = libp2p::tls::certificate::parse(cert).map_err(|_| QuicError::NoIdentity)?;
    Ok(cert.peer_id())
}
