//! Organisations (tenants) and their API keys.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::grammar::check_name;
use crate::parse::FieldError;

/// A new organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationFields {
    /// Name.
    pub name: String,
    /// Most calls in progress at once; beyond it calls wait in `queued` (in order, up to the
    /// queue timeout, then `failed` with `queue_timeout`).
    pub max_concurrent_calls: Option<u32>,
    /// Most dispatches per second; beyond it `429` with `Retry-After`.
    pub max_calls_per_second: Option<u32>,
}

impl OrganizationFields {
    /// The rules serde does not check.
    pub fn check(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)
    }
}

/// An organisation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Organization)]
pub struct OrganizationView {
    /// UUID.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Rate cap.
    pub max_calls_per_second: Option<u32>,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// A key to issue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    /// Whether it may manage organisations and keys (default false).
    pub admin: Option<bool>,
}

/// A key just issued. Only its SHA-256 is stored: the secret is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = IssuedKey)]
pub struct IssuedKeyView {
    /// UUID.
    pub id: Uuid,
    /// The organisation.
    pub organization_id: Uuid,
    /// The secret, for `Authorization: Bearer <key>`.
    pub key: String,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// Admin or not.
    pub admin: bool,
}
