//! Phone numbers on trunks, and the E.164 rule every number on the API follows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::parse::FieldError;

/// `+` then 2–15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `value` of `field` when it is E.164.
pub fn check_e164(field: &str, value: &str) -> Result<(), FieldError> {
    if is_e164(value) {
        Ok(())
    } else {
        Err(FieldError::invalid(
            field,
            format!("`{field}` must be an E.164 number: + then 2-15 digits, the first not 0"),
        ))
    }
}

/// A number to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberFields {
    /// E.164.
    pub e164: String,
    /// The trunk that carries it.
    pub trunk_id: Uuid,
}

/// A number as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Number)]
pub struct NumberView {
    /// UUID.
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// E.164.
    pub e164: String,
    /// The trunk.
    pub trunk_id: Uuid,
    /// The agent that answers calls placed to the number: its oldest agent whose `direction`
    /// is `inbound` or `both`; null when none does (calls to it are refused `404`).
    #[serde(default)]
    pub answering_agent_id: Option<Uuid>,
    /// RFC 3339.
    pub created_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_rules() {
        for ok in ["+15551230000", "+44", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "15551230000",
            "+0555",
            "+1",
            "+1234567890123456",
            "+1555-123",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert_eq!(check_e164("to", "555").unwrap_err().field, "to");
    }
}
