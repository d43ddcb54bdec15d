//! SIP over TLS (RFC 3261 §26.2, RFC 5630): the client side towards a trunk and the server
//! side of our own TLS listener, with rustls.
//!
//! A trunk's certificate is verified against the system's roots, or only against the trunk's
//! own CA when it names one (`tls_ca_pem`), and its host name is checked (the outbound proxy's
//! when the trunk has one: that is who answers the connection). A client certificate makes the
//! connection mutual TLS. `verify: false` turns every check off, for tests only, and says so
//! in the log on every connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{Trunk, UaError};

/// A trunk's TLS settings. `Debug` hides the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TrunkTls {
    /// PEM certificates to trust instead of the system's roots.
    pub ca_pem: Option<String>,
    /// Verify the trunk's certificate and host name; `false` only for tests.
    pub verify: bool,
    /// PEM certificate chain presented to the trunk (mutual TLS), with `client_key_pem`.
    pub client_cert_pem: Option<String>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<String>,
}

impl Default for TrunkTls {
    fn default() -> Self {
        Self {
            ca_pem: None,
            verify: true,
            client_cert_pem: None,
            client_key_pem: None,
        }
    }
}

impl std::fmt::Debug for TrunkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("verify", &self.verify)
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<pem>"),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Our own TLS listener: where it binds and the certificate it presents. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsListen {
    /// Address to listen on (port 0 picks one).
    pub bind: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM private key of the leaf.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen")
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

/// How to open a TLS connection to one trunk target: the client configuration and the name
/// its certificate must carry.
#[derive(Clone)]
pub(crate) struct TlsRoute {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoute")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The system's trust anchors, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "cannot read a system root certificate");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system root certificates loaded");
            Arc::new(roots)
        })
        .clone()
}

/// Every certificate in `pem`; an error naming `what` when there is none or one is broken.
fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key in `pem` (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("{what}: no usable PEM private key ({e})"))
}

/// A trunk TLS setting that makes no TLS client: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettingError {
    /// The trunk field at fault (`tls_ca_pem`, `tls_client_cert_pem`, `tls_client_key_pem`).
    pub field: &'static str,
    /// What is wrong with it, starting with the field's name.
    pub reason: String,
}

impl std::fmt::Display for TlsSettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Whether `settings` make a TLS client: the trusted certificates parse, and the client key
/// is the client certificate's. On a trunk's creation this refuses what every call would fail
/// on.
pub fn check_settings(settings: &TrunkTls) -> Result<(), TlsSettingError> {
    client_config(settings).map(|_| ())
}

/// The TLS client configuration `settings` make: its trust (the system's roots, the given
/// CA, or none for `verify: false`) and its client certificate.
fn client_config(settings: &TrunkTls) -> Result<ClientConfig, TlsSettingError> {
    let at = |field: &'static str| move |reason: String| TlsSettingError { field, reason };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| at("tls_ca_pem")(format!("tls_ca_pem: no TLS version to run ({e})")))?;
    let builder = if settings.verify {
        let roots = match &settings.ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(pem, "tls_ca_pem").map_err(at("tls_ca_pem"))? {
                    roots
                        .add(cert)
                        .map_err(|e| at("tls_ca_pem")(format!("tls_ca_pem: {e}")))?;
                }
                Arc::new(roots)
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider().signature_verification_algorithms,
            )))
    };
    match (&settings.client_cert_pem, &settings.client_key_pem) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certificates(cert, "tls_client_cert_pem").map_err(at("tls_client_cert_pem"))?,
                private_key(key, "tls_client_key_pem").map_err(at("tls_client_key_pem"))?,
            )
            .map_err(|e| {
                at("tls_client_key_pem")(format!(
                    "tls_client_key_pem: not a usable key of tls_client_cert_pem ({e})"
                ))
            }),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Builds the client side for `trunk`'s TLS connections.
pub(crate) fn route(trunk: &Trunk) -> Result<TlsRoute, UaError> {
    let refused = |reason: String| UaError::Tls {
        trunk: trunk.name.clone(),
        reason,
    };
    let config = client_config(&trunk.tls).map_err(|e| refused(e.reason))?;
    let host = trunk.connection_host();
    let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| refused(format!("{host} is not a TLS server name: {e}")))?;
    Ok(TlsRoute {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// Builds the server side of our TLS listener.
pub(crate) fn acceptor(listen: &TlsListen) -> Result<TlsAcceptor, UaError> {
    let refused = |reason: String| UaError::TlsListener { reason };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(
            certificates(&listen.cert_chain_pem, "certificate").map_err(refused)?,
            private_key(&listen.key_pem, "key").map_err(refused)?,
        )
        .map_err(|e| refused(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts any certificate and any name (`verify: false`, tests only). Signatures are still
/// checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!(
            server = ?server_name,
            "TLS certificate NOT VERIFIED (trunk tls_verify is false): for tests only, \
             anyone on the path can read and change this trunk's calls"
        );
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The TLS identity each target address is reached with: one per address, so a message for
/// a trunk never rides a connection opened with another trunk's trust settings.
#[derive(Debug, Default)]
pub(crate) struct TlsTargets {
    known: HashMap<SocketAddr, Known>,
}

#[derive(Debug, Clone)]
struct Known {
    trunk: String,
    settings: TrunkTls,
    host: String,
    route: TlsRoute,
}

/// What [`TlsTargets::learn`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// The target was known with these settings already.
    Known,
    /// The target is new.
    New,
    /// The trunk's settings changed: a connection opened with the old ones must not be used.
    Replaced,
}

impl TlsTargets {
    /// Keeps how `trunk` reaches `target` over TLS. Refused when another trunk reaches the
    /// same address with other TLS settings: one address, one identity.
    pub(crate) fn learn(&mut self, trunk: &Trunk, target: SocketAddr) -> Result<Learned, UaError> {
        let host = trunk.connection_host();
        let learned = match self.known.get(&target) {
            Some(k) if k.settings == trunk.tls && k.host == host => return Ok(Learned::Known),
            Some(k) if k.trunk != trunk.name => {
                return Err(UaError::Tls {
                    trunk: trunk.name.clone(),
                    reason: format!(
                        "{target} is also reached by trunk {} with other TLS settings; trunks \
                         sharing an address must share them",
                        k.trunk
                    ),
                });
            }
            Some(_) => Learned::Replaced,
            None => Learned::New,
        };
        let known = Known {
            trunk: trunk.name.clone(),
            settings: trunk.tls.clone(),
            host,
            route: route(trunk)?,
        };
        self.known.insert(target, known);
        Ok(learned)
    }

    /// Reaches `also` (a dialog's next hop: the far end's Contact) the way `target` is reached.
    pub(crate) fn extend(&mut self, target: SocketAddr, also: SocketAddr) {
        if self.known.contains_key(&also) {
            return;
        }
        if let Some(known) = self.known.get(&target).cloned() {
            self.known.insert(also, known);
        }
    }

    /// How to open a TLS connection to `target`.
    pub(crate) fn route(&self, target: SocketAddr) -> Option<&TlsRoute> {
        self.known.get(&target).map(|k| &k.route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transport;

    fn trunk(name: &str, verify: bool) -> Trunk {
        let mut t = Trunk::new(name, "127.0.0.1", Transport::Tls);
        t.tls.verify = verify;
        t
    }

    #[test]
    fn a_client_key_of_another_certificate_is_refused() {
        let ca = dialtone_test_support::pki::TestCa::new("settings test CA").unwrap();
        let ours = ca.issue("ours", &["client.test"]).unwrap();
        let other = ca.issue("other", &["other.test"]).unwrap();
        let settings = |key: &str| TrunkTls {
            ca_pem: Some(ca.ca.cert_pem.clone()),
            client_cert_pem: Some(ours.cert_pem.clone()),
            client_key_pem: Some(key.to_owned()),
            ..TrunkTls::default()
        };
        assert_eq!(check_settings(&settings(&ours.key_pem)), Ok(()));
        let refused = check_settings(&settings(&other.key_pem)).unwrap_err();
        assert_eq!(refused.field, "tls_client_key_pem", "{refused}");
    }

    #[test]
    fn one_tls_identity_per_target_address() {
        let target: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let mut targets = TlsTargets::default();
        assert_eq!(
            targets.learn(&trunk("a", true), target).unwrap(),
            Learned::New
        );
        assert_eq!(
            targets.learn(&trunk("a", true), target).unwrap(),
            Learned::Known
        );
        // Another trunk with the same settings shares the address.
        assert_eq!(
            targets.learn(&trunk("b", true), target).unwrap(),
            Learned::Known
        );
        // Another trunk with other settings does not take it over.
        assert!(matches!(
            targets.learn(&trunk("c", false), target),
            Err(UaError::Tls { trunk, .. }) if trunk == "c"
        ));
        // The trunk's own settings changed: its old connection must go.
        assert_eq!(
            targets.learn(&trunk("a", false), target).unwrap(),
            Learned::Replaced
        );
        // A dialog's next hop is reached as its target is; a known one is left as it is.
        let contact: SocketAddr = "127.0.0.2:5061".parse().unwrap();
        assert!(targets.route(contact).is_none());
        targets.extend(target, contact);
        assert!(targets.route(contact).is_some());
        assert_eq!(
            targets.learn(&trunk("a", false), contact).unwrap(),
            Learned::Known
        );
    }
}
