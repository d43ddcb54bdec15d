//! SIP trunks: the fields a request sets and the trunk the API shows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::names::wire_enum;
use crate::parse::FieldError;

wire_enum! {
    /// SIP transport of a trunk.
    pub enum TrunkTransport ("transport") {
        /// UDP.
        Udp = "udp",
        /// TCP.
        Tcp = "tcp",
    }
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
    /// SIP port, default 5060.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `udp` (default) or `tcp`.
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
            .finish_non_exhaustive()
    }
}

impl TrunkFields {
    /// The rules serde does not check: `name` and `host` are there, the port is one.
    pub fn check(&self) -> Result<(), FieldError> {
        for (field, value) in [("name", &self.name), ("host", &self.host)] {
            if value.is_none() {
                return Err(FieldError::invalid(field, format!("`{field}` is required")));
            }
        }
        self.checked_port().map(|_| ())
    }

    /// The port, checked (default 5060).
    pub fn checked_port(&self) -> Result<u16, FieldError> {
        u16::try_from(self.port.unwrap_or(5060))
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
    /// Where the registration stands; null without one.
    pub registration: Option<RegistrationView>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
}
