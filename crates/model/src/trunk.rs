//! SIP trunks: the fields a request sets and the trunk the API shows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::grammar::{check_name, is_host, is_quoted_text, is_sip_user};
use crate::names::wire_enum;
use crate::network::Network;
use crate::parse::FieldError;
use crate::pem;

wire_enum! {
    /// SIP transport of a trunk.
    pub enum TrunkTransport ("transport") {
        /// UDP.
        Udp = "udp",
        /// TCP.
        Tcp = "tcp",
        /// TLS over TCP (`sips:`), default port 5061.
        Tls = "tls",
    }
}

impl TrunkTransport {
    /// The port a trunk without one uses.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }
}

wire_enum! {
    /// Media encryption on a trunk: SRTP with SDES keys (RFC 4568), which travel only over TLS.
    pub enum SrtpMode ("srtp") {
        /// Plain RTP.
        Off = "off",
        /// Offer SRTP keys; take a plain answer too.
        Optional = "optional",
        /// SRTP or no call: an answer without a usable key ends the call, nothing is sent in clear.
        Required = "required",
    }
}

wire_enum! {
    /// An audio codec a trunk may carry.
    pub enum Codec ("codec") {
        /// Opus (RFC 7587), wideband and more, 48 kHz RTP clock.
        Opus = "opus",
        /// G.722, wideband (16 kHz), 8 kHz RTP clock (RFC 3551).
        G722 = "g722",
        /// G.711 µ-law.
        Pcmu = "pcmu",
        /// G.711 A-law.
        Pcma = "pcma",
    }
}

impl Codec {
    /// What a trunk without `codecs` offers, best first: wideband before G.711 (the agent's
    /// speech recognition hears more of the caller), Opus before G.722 (better at the same
    /// bit rate, and it conceals loss). A trunk that takes only G.711 answers G.711.
    pub const DEFAULT_PREFERENCE: &'static [Codec] =
        &[Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];
}

/// A trunk's writable fields. On create `name` and `host` are required; a PATCH is laid over
/// the stored fields first (`null` clears an optional one). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkFields {
    /// Unique name (per organisation); required on create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host name or address (SRV records are followed for names without a port); required on
    /// create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SIP port, default 5060 (5061 for `tls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `udp` (default), `tcp` or `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TrunkTransport>,
    /// Digest user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Digest password: write-only, never returned nor logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Digest realm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Domain of the From header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_domain: Option<String>,
    /// Most calls in progress through the trunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u32>,
    /// Most new calls per second through the trunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls_per_second: Option<u32>,
    /// Keep a registration with the trunk (REGISTER with the credentials, refreshed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<bool>,
    /// Networks calls placed to the trunk's numbers may also come from (`203.0.113.0/24`,
    /// `2001:db8::/32`, or one address), besides the addresses its host resolves to; at most
    /// 32, none wider than /8 (IPv6: /32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_cidrs: Option<Vec<String>>,
    /// With `tls`: PEM certificates to trust instead of the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_pem: Option<String>,
    /// With `tls`: verify the trunk's certificate and host name (default true; `false` is for
    /// tests only and is logged loudly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// With `tls`: a PEM client certificate chain for mutual TLS (with `tls_client_key_pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert_pem: Option<String>,
    /// With `tls`: the client certificate's PEM private key; write-only, never returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_key_pem: Option<String>,
    /// Media encryption: `off` (default), `optional` or `required` (SDES keys, RFC 4568);
    /// anything but `off` needs transport `tls`, since the keys travel in the SDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpMode>,
    /// The codecs to offer, best first (default `["opus", "g722", "pcmu", "pcma"]`); a
    /// codec left out is never used on the trunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codecs: Option<Vec<Codec>>,
    /// Hosts (besides the trunk's own) that `sip:` transfer destinations may name; default
    /// none: a transfer to a SIP URI elsewhere is refused (no open relay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_sip_domains: Option<Vec<String>>,
}

impl std::fmt::Debug for TrunkFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkFields")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "tls_client_key_pem",
                &self.tls_client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("srtp", &self.srtp)
            .field("codecs", &self.codecs)
            .field("transfer_sip_domains", &self.transfer_sip_domains)
            .finish_non_exhaustive()
    }
}

impl TrunkFields {
    /// Every field's name (a test checks the list against the type).
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "host",
        "port",
        "transport",
        "username",
        "password",
        "realm",
        "from_domain",
        "max_concurrent_calls",
        "max_calls_per_second",
        "register",
        "inbound_cidrs",
        "tls_ca_pem",
        "tls_verify",
        "tls_client_cert_pem",
        "tls_client_key_pem",
        "srtp",
        "codecs",
        "transfer_sip_domains",
    ];

    /// The rules serde does not check: `name` and `host` are there, the port is one.
    /// Every string is checked against the grammar it will be printed in (RFC 3261 §25.1),
    /// so none can inject a header or break a message.
    pub fn check(&self) -> Result<(), FieldError> {
        for (field, value) in [("name", &self.name), ("host", &self.host)] {
            if value.is_none() {
                return Err(FieldError::invalid(field, format!("`{field}` is required")));
            }
        }
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        for (field, host) in [("host", &self.host), ("from_domain", &self.from_domain)] {
            if host.as_deref().is_some_and(|h| !is_host(h)) {
                return Err(FieldError::invalid(
                    field,
                    format!("`{field}` must be a host name or an IP address (RFC 3261 host)"),
                ));
            }
        }
        if self.username.as_deref().is_some_and(|u| !is_sip_user(u)) {
            return Err(FieldError::invalid(
                "username",
                "`username` must be 1-128 characters of a SIP user part (letters, digits, \
                 -_.!~*'()&=+$,;?/ and %HH escapes)",
            ));
        }
        if self.realm.as_deref().is_some_and(|r| !is_quoted_text(r)) {
            return Err(FieldError::invalid(
                "realm",
                "`realm` must be at most 256 printable characters without `\"` or `\\`",
            ));
        }
        if self
            .password
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.len() > 256 || p.chars().any(char::is_control))
        {
            return Err(FieldError::invalid(
                "password",
                "`password` must be 1-256 characters without control characters",
            ));
        }
        self.checked_inbound_cidrs()?;
        self.check_security()?;
        self.check_codecs()?;
        let domains = self.transfer_sip_domains.iter().flatten();
        if domains.clone().count() > 64 || domains.clone().any(|d| !is_host(d)) {
            return Err(FieldError::invalid(
                "transfer_sip_domains",
                "`transfer_sip_domains` must be at most 64 host names or IP addresses \
                 (RFC 3261 host)",
            ));
        }
        self.checked_port().map(|_| ())
    }

    /// The networks of `inbound_cidrs`, each checked.
    pub fn checked_inbound_cidrs(&self) -> Result<Vec<Network>, FieldError> {
        let list = self.inbound_cidrs.as_deref().unwrap_or_default();
        if list.len() > 32 {
            return Err(FieldError::invalid(
                "inbound_cidrs",
                "`inbound_cidrs` may list at most 32 networks",
            ));
        }
        list.iter()
            .map(|n| {
                let network = n.parse::<Network>().map_err(|_| {
                    FieldError::invalid(
                        "inbound_cidrs",
                        format!(
                            "`inbound_cidrs` must list networks like 203.0.113.0/24 or \
                             addresses: {n:?} is not one"
                        ),
                    )
                })?;
                if !network.is_narrow() {
                    return Err(FieldError::invalid(
                        "inbound_cidrs",
                        format!(
                            "`inbound_cidrs` networks must be /8 or narrower (IPv6: /32): {n:?} \
                             would trust much of the internet"
                        ),
                    ));
                }
                Ok(network)
            })
            .collect()
    }

    /// At least one codec, each once.
    fn check_codecs(&self) -> Result<(), FieldError> {
        let Some(codecs) = &self.codecs else {
            return Ok(());
        };
        if codecs.is_empty() {
            return Err(FieldError::invalid(
                "codecs",
                "`codecs` must name at least one codec (or be null for the default)",
            ));
        }
        if let Some(codec) = codecs
            .iter()
            .enumerate()
            .find_map(|(i, c)| codecs.iter().take(i).any(|e| e == c).then_some(c))
        {
            return Err(FieldError::invalid(
                "codecs",
                format!("`codecs` names `{codec}` more than once"),
            ));
        }
        Ok(())
    }

    /// TLS settings only on a TLS trunk, each PEM what it claims to be; SRTP only over TLS.
    fn check_security(&self) -> Result<(), FieldError> {
        let tls = self.transport == Some(TrunkTransport::Tls);
        let tls_fields = [
            ("tls_ca_pem", self.tls_ca_pem.is_some()),
            // `true` is every trunk's default, so it is said harmlessly of any.
            ("tls_verify", self.tls_verify == Some(false)),
            ("tls_client_cert_pem", self.tls_client_cert_pem.is_some()),
            ("tls_client_key_pem", self.tls_client_key_pem.is_some()),
        ];
        if let Some((field, _)) = tls_fields.iter().find(|(_, set)| *set && !tls) {
            return Err(FieldError::invalid(
                field,
                format!("`{field}` applies only to a trunk with transport `tls`"),
            ));
        }
        if self.srtp.is_some_and(|m| m != SrtpMode::Off) && !tls {
            return Err(FieldError::invalid(
                "srtp",
                "`srtp` needs transport `tls`: SDES keys (RFC 4568) travel in the SDP, which \
                 anyone on the path reads over `udp` or `tcp`",
            ));
        }
        if let Some(pem) = &self.tls_ca_pem {
            pem::certificates("tls_ca_pem", pem)?;
        }
        match (&self.tls_client_cert_pem, &self.tls_client_key_pem) {
            (Some(cert), Some(key)) => {
                pem::certificates("tls_client_cert_pem", cert)?;
                pem::private_key("tls_client_key_pem", key)?;
            }
            (Some(_), None) => {
                return Err(FieldError::invalid(
                    "tls_client_key_pem",
                    "`tls_client_cert_pem` needs its private key in `tls_client_key_pem`",
                ));
            }
            (None, Some(_)) => {
                return Err(FieldError::invalid(
                    "tls_client_cert_pem",
                    "`tls_client_key_pem` needs its certificate in `tls_client_cert_pem`",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The port, checked (default 5060, 5061 for TLS).
    pub fn checked_port(&self) -> Result<u16, FieldError> {
        let default = self.transport.unwrap_or(TrunkTransport::Udp).default_port();
        u16::try_from(self.port.unwrap_or(u32::from(default)))
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| FieldError::invalid("port", "`port` must be 1-65535"))
    }
}

/// Where a trunk's registration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RegistrationView {
    /// Not (yet) confirmed.
    Pending,
    /// Registered until `expires` seconds from the last refresh.
    Registered {
        /// Seconds the registrar granted.
        expires: u32,
        /// Refreshes so far.
        refreshes: u32,
    },
    /// The registrar refused.
    Failed {
        /// Its final status, when one came.
        sip_status: Option<u16>,
    },
}

/// A trunk as the API shows it: no password, whether one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Trunk)]
pub struct TrunkView {
    /// UUID.
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// Unique name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: TrunkTransport,
    /// Digest user name.
    pub username: Option<String>,
    /// Whether a password is set (it is never shown).
    pub has_password: bool,
    /// Digest realm.
    pub realm: Option<String>,
    /// From domain.
    pub from_domain: Option<String>,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Rate cap.
    pub max_calls_per_second: Option<u32>,
    /// Whether Dialtone keeps a registration with the trunk.
    pub register: bool,
    /// Networks calls to the trunk's numbers may also come from, besides its host's addresses.
    pub inbound_cidrs: Vec<String>,
    /// PEM certificates trusted instead of the system's roots (TLS).
    pub tls_ca_pem: Option<String>,
    /// Whether the trunk's certificate is verified (TLS).
    pub tls_verify: bool,
    /// PEM client certificate for mutual TLS.
    pub tls_client_cert_pem: Option<String>,
    /// Whether a client private key is set (it is never shown).
    pub has_tls_client_key: bool,
    /// Media encryption.
    pub srtp: SrtpMode,
    /// The codecs offered, best first.
    pub codecs: Vec<Codec>,
    /// Hosts besides the trunk's that `sip:` transfer destinations may name.
    #[serde(default)]
    pub transfer_sip_domains: Vec<String>,
    /// Where the registration stands; null without one.
    pub registration: Option<RegistrationView>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut TrunkFields)) -> String {
        let mut fields = TrunkFields {
            name: Some("main".into()),
            host: Some("sip.example.com".into()),
            ..TrunkFields::default()
        };
        change(&mut fields);
        fields.check().err().map(|e| e.field).unwrap_or_default()
    }

    #[test]
    fn the_field_list_is_the_types() {
        let every = TrunkFields {
            name: Some("n".into()),
            host: Some("h".into()),
            port: Some(5060),
            transport: Some(TrunkTransport::Udp),
            username: Some("u".into()),
            password: Some("p".into()),
            realm: Some("r".into()),
            from_domain: Some("d".into()),
            max_concurrent_calls: Some(1),
            max_calls_per_second: Some(1),
            register: Some(true),
            inbound_cidrs: Some(vec!["10.0.0.0/8".into()]),
            tls_ca_pem: Some("c".into()),
            tls_verify: Some(true),
            tls_client_cert_pem: Some("c".into()),
            tls_client_key_pem: Some("k".into()),
            srtp: Some(SrtpMode::Off),
            codecs: Some(vec![Codec::Pcmu]),
            transfer_sip_domains: Some(vec!["pbx.example.com".into()]),
        };
        crate::parse::tests::assert_lists_every_key(&every, TrunkFields::FIELDS);
    }

    #[test]
    fn strings_that_would_break_a_sip_message_are_refused_naming_the_field() {
        assert_eq!(refused(|_| {}), "");
        assert_eq!(
            refused(|f| f.username = Some("u\r\nX-Injected: yes".into())),
            "username"
        );
        assert_eq!(
            refused(|f| f.from_domain = Some("evil.com>;tag=1".into())),
            "from_domain"
        );
        for host in ["", "a b", "h\r\nVia: x", &"h".repeat(5000)] {
            assert_eq!(
                refused(|f| f.host = Some(host.to_owned())),
                "host",
                "{host:?}"
            );
        }
        assert_eq!(refused(|f| f.realm = Some("r\"\r\n".into())), "realm");
        assert_eq!(refused(|f| f.password = Some("p\nq".into())), "password");
        assert_eq!(refused(|f| f.name = Some("n".repeat(201))), "name");
        assert_eq!(refused(|f| f.port = Some(70_000)), "port");
        assert_eq!(
            refused(|f| f.transfer_sip_domains = Some(vec!["pbx.example.com".into()])),
            ""
        );
        assert_eq!(
            refused(|f| f.transfer_sip_domains = Some(vec!["a b>".into()])),
            "transfer_sip_domains"
        );
    }

    #[test]
    fn inbound_cidrs_are_narrow_networks_or_addresses_and_at_most_32() {
        let set = |list: Vec<&'static str>| {
            move |f: &mut TrunkFields| {
                f.inbound_cidrs = Some(list.iter().map(|n| (*n).to_owned()).collect())
            }
        };
        assert_eq!(
            refused(set(vec!["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"])),
            ""
        );
        assert_eq!(refused(set(vec![])), "");
        for bad in [
            "203.0.113.0/33",
            "carrier.example.com",
            "10.0.0.0/",
            " ",
            "0.0.0.0/0",
            "10.0.0.0/7",
            "::/0",
            "2001:db8::/31",
        ] {
            assert_eq!(refused(set(vec![bad])), "inbound_cidrs", "{bad}");
        }
        assert_eq!(refused(set(vec!["10.0.0.0/8"])), "");
        assert_eq!(refused(set(vec!["10.0.0.1"; 33])), "inbound_cidrs");
    }

    #[test]
    fn tls_settings_only_on_tls_trunks_and_srtp_only_over_tls() {
        assert_eq!(refused(|f| f.tls_ca_pem = Some("x".into())), "tls_ca_pem");
        assert_eq!(refused(|f| f.tls_verify = Some(false)), "tls_verify");
        assert_eq!(refused(|f| f.tls_verify = Some(true)), "");
        assert_eq!(refused(|f| f.srtp = Some(SrtpMode::Required)), "srtp");
        assert_eq!(refused(|f| f.srtp = Some(SrtpMode::Off)), "");
        let tls = |f: &mut TrunkFields| f.transport = Some(TrunkTransport::Tls);
        assert_eq!(
            refused(|f| {
                tls(f);
                f.srtp = Some(SrtpMode::Required);
            }),
            ""
        );
        assert_eq!(
            refused(|f| {
                tls(f);
                f.tls_ca_pem = Some("not a certificate".into());
            }),
            "tls_ca_pem"
        );
        assert_eq!(
            refused(|f| {
                tls(f);
                f.tls_client_cert_pem = Some("x".into());
            }),
            "tls_client_key_pem"
        );
        let mut fields = TrunkFields {
            transport: Some(TrunkTransport::Tls),
            ..TrunkFields::default()
        };
        assert_eq!(fields.checked_port().unwrap(), 5061);
        fields.transport = Some(TrunkTransport::Udp);
        assert_eq!(fields.checked_port().unwrap(), 5060);
    }

    #[test]
    fn codecs_are_named_at_least_once_and_at_most_once_each() {
        assert_eq!(
            refused(|f| f.codecs = Some(vec![Codec::G722, Codec::Pcmu])),
            ""
        );
        assert_eq!(refused(|f| f.codecs = Some(Vec::new())), "codecs");
        assert_eq!(
            refused(|f| f.codecs = Some(vec![Codec::Pcmu, Codec::Opus, Codec::Pcmu])),
            "codecs"
        );
        let parsed: Result<TrunkFields, _> =
            serde_json::from_value(serde_json::json!({"codecs": ["g729"]}));
        assert!(parsed.unwrap_err().to_string().contains("g729"));
        assert_eq!(Codec::DEFAULT_PREFERENCE.len(), Codec::ALL.len());
    }
}
