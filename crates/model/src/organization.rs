//! Organisations (tenants) and their API keys: what a request sets, what the API shows, and
//! the scopes a key can have ([`KeyScope`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::grammar::check_name;
use crate::names::wire_enum;
use crate::parse::FieldError;

wire_enum! {
    /// What a key may do. Every key uses the API of its own organisation (its trunks, numbers,
    /// agents and calls); the scopes above `standard` add key and organisation management.
    pub enum KeyScope ("key scope") {
        /// The platform's key: manages every organisation (create, list, disable) and the keys
        /// of any of them. `DIALTONE_API_KEY` is one.
        Operator = "operator",
        /// An organisation's administrator: lists, issues and revokes the keys of its own
        /// organisation (`admin` or `standard` ones), nothing beyond it.
        Admin = "admin",
        /// Uses the API of its organisation; manages no keys.
        Standard = "standard",
    }
}

impl KeyScope {
    /// Whether a key of this scope may manage the keys of its own organisation.
    pub fn manages_keys(self) -> bool {
        matches!(self, Self::Operator | Self::Admin)
    }
}

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

/// Changes to an organisation (`PATCH`); what is absent stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPatch {
    /// A disabled organisation's dispatches are refused (`403 organization_disabled`); its
    /// calls already live go on, and everything else works as before. `false` enables it again.
    pub disabled: Option<bool>,
    /// With `"disabled": true`: also hang up the organisation's live calls, as the API's
    /// hang-up does (out of the queue, CANCEL while ringing, BYE once answered).
    pub end_live_calls: Option<bool>,
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
    /// Whether its dispatches are refused.
    pub disabled: bool,
    /// When it was disabled, RFC 3339 (`null` while enabled).
    pub disabled_at: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// A key to issue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    /// What the key may do (default `standard`). Only an `operator` key issues `operator` keys.
    pub scope: Option<KeyScope>,
    /// The older spelling of `"scope": "admin"` (`true`) or `"standard"` (`false`); when both
    /// are sent they must agree (`true` with a scope that manages keys).
    pub admin: Option<bool>,
    /// When the key stops working, RFC 3339 and in the future (default: never). After it the
    /// key is `401` like a wrong one.
    pub expires_at: Option<String>,
}

impl KeyFields {
    /// The scope asked for: `scope`, else what `admin` says, else `standard`.
    pub fn requested_scope(&self) -> Result<KeyScope, FieldError> {
        match (self.scope, self.admin) {
            (Some(scope), None) => Ok(scope),
            (None, Some(true)) => Ok(KeyScope::Admin),
            (None, Some(false) | None) => Ok(KeyScope::Standard),
            (Some(scope), Some(admin)) if scope.manages_keys() == admin => Ok(scope),
            (Some(scope), Some(admin)) => Err(FieldError::invalid(
                "admin",
                format!("`admin: {admin}` contradicts `scope: \"{scope}\"`; send `scope` alone"),
            )),
        }
    }
}

/// A key as the API lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Key)]
pub struct KeyView {
    /// UUID.
    pub id: Uuid,
    /// The organisation.
    pub organization_id: Uuid,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// What it may do.
    pub scope: KeyScope,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// When it stops working, RFC 3339 (`null`: never).
    pub expires_at: Option<String>,
    /// When it was last used, RFC 3339, to the minute (`null`: never).
    pub last_used_at: Option<String>,
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
    /// What it may do.
    pub scope: KeyScope,
    /// Whether it manages keys (`scope` is `operator` or `admin`); the older spelling.
    pub admin: bool,
    /// When it stops working, RFC 3339 (`null`: never).
    pub expires_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_value;
    use serde_json::json;

    fn scope(body: serde_json::Value) -> Result<KeyScope, FieldError> {
        from_value::<KeyFields>(body)?.requested_scope()
    }

    #[test]
    fn a_key_scope_comes_from_scope_or_the_older_admin_flag() {
        assert_eq!(scope(json!({})), Ok(KeyScope::Standard));
        assert_eq!(scope(json!({"admin": true})), Ok(KeyScope::Admin));
        assert_eq!(scope(json!({"admin": false})), Ok(KeyScope::Standard));
        assert_eq!(scope(json!({"scope": "operator"})), Ok(KeyScope::Operator));
        assert_eq!(
            scope(json!({"scope": "admin", "admin": true})),
            Ok(KeyScope::Admin)
        );
        assert_eq!(
            scope(json!({"scope": "standard", "admin": false})),
            Ok(KeyScope::Standard)
        );
        assert_eq!(
            scope(json!({"scope": "operator", "admin": true})),
            Ok(KeyScope::Operator)
        );
        let e = scope(json!({"scope": "operator", "admin": false})).unwrap_err();
        assert_eq!(e.field, "admin");
        assert!(e.message.contains("send `scope` alone"), "{}", e.message);
        let e = scope(json!({"scope": "root"})).unwrap_err();
        assert_eq!(e.field, "scope");
        assert!(e.message.contains("operator"), "{}", e.message);
        assert!(KeyScope::Operator.manages_keys() && KeyScope::Admin.manages_keys());
        assert!(!KeyScope::Standard.manages_keys());
    }
}
