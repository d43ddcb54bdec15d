//! Providers: the language, speech-recognition and speech-synthesis services an organisation's
//! `builtin:agent` agents use (their `llm`, `stt` and `tts` settings name one by its name or
//! id). What a request sets ([`ProviderFields`]), what the API shows ([`ProviderView`]) and what
//! the engine reads ([`Provider`]). The API key is write-only: the view says whether one is set,
//! and no `Debug` here shows it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dispatch::check_http_url;
use crate::grammar::check_name;
use crate::names::wire_enum;
use crate::parse::FieldError;

wire_enum! {
    /// The protocol a provider speaks.
    pub enum ProviderKind ("provider kind") {
        /// OpenAI-compatible HTTP (`/chat/completions`, `/audio/transcriptions`,
        /// `/audio/speech`): OpenAI, Groq, vLLM, llama.cpp, Ollama, speaches, Kokoro-FastAPI.
        OpenAi = "openai",
        /// Deepgram's streaming speech recognition.
        Deepgram = "deepgram",
        /// Cartesia's streaming speech synthesis.
        Cartesia = "cartesia",
        /// ElevenLabs' streaming speech synthesis.
        ElevenLabs = "elevenlabs",
    }
}

impl ProviderKind {
    /// The base URL of the kind's public service, used when a provider gives none.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::OpenAi => "https://api.openai.com/v1",
            Self::Deepgram => "https://api.deepgram.com/v1",
            Self::Cartesia => "https://api.cartesia.ai",
            Self::ElevenLabs => "https://api.elevenlabs.io/v1",
        }
    }
}

/// Most bytes of a provider's `api_key`.
pub const MAX_API_KEY_BYTES: usize = 4096;

/// Most bytes of a provider's `base_url`.
pub const MAX_BASE_URL_BYTES: usize = 2048;

/// What `Debug` shows for a secret.
fn redacted(secret: Option<&String>) -> Option<&'static str> {
    secret.map(|_| "<redacted>")
}

/// A provider's writable fields. On create `name` and `kind` are required; a PATCH is laid over
/// the stored fields first (`null` clears `base_url`, back to the kind's default, or
/// `api_key`). `Debug` hides the API key.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderFields {
    /// Unique name (per organisation); agents name the provider by it or by its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `openai`, `deepgram`, `cartesia` or `elevenlabs`; required on create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ProviderKind>,
    /// The service's http(s) base URL (default: the kind's public service); not private
    /// unless the operator allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The service's API key: write-only, never returned nor logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for ProviderFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderFields")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(self.api_key.as_ref()))
            .finish()
    }
}

impl ProviderFields {
    /// Every field's name (a test checks the list against the type).
    pub const FIELDS: &'static [&'static str] = &["name", "kind", "base_url", "api_key"];

    /// The rules serde does not check: `name` and `kind` are there, the base URL is an http(s)
    /// URL, the API key a bounded string a header can carry.
    pub fn check(&self) -> Result<(), FieldError> {
        match &self.name {
            None => return Err(FieldError::invalid("name", "`name` is required")),
            Some(name) => check_name("name", name)?,
        }
        if self.kind.is_none() {
            return Err(FieldError::invalid(
                "kind",
                "`kind` is required: \"openai\", \"deepgram\", \"cartesia\" or \"elevenlabs\"",
            ));
        }
        if let Some(url) = &self.base_url {
            check_http_url("base_url", url)?;
            if url.len() > MAX_BASE_URL_BYTES {
                return Err(FieldError::invalid(
                    "base_url",
                    format!("`base_url` is longer than {MAX_BASE_URL_BYTES} bytes"),
                ));
            }
        }
        if self.api_key.as_deref().is_some_and(|k| {
            k.is_empty() || k.len() > MAX_API_KEY_BYTES || k.chars().any(char::is_control)
        }) {
            return Err(FieldError::invalid(
                "api_key",
                format!("`api_key` must be 1-{MAX_API_KEY_BYTES} bytes without control characters"),
            ));
        }
        Ok(())
    }

    /// The base URL given, else the kind's default (`None` without a kind).
    pub fn base_url_or_default(&self) -> Option<String> {
        self.base_url
            .clone()
            .or_else(|| self.kind.map(|k| k.default_base_url().to_owned()))
    }
}

/// A provider as the API shows it: no API key, whether one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Provider)]
pub struct ProviderView {
    /// UUID.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// The protocol it speaks.
    pub kind: ProviderKind,
    /// The service's base URL.
    pub base_url: String,
    /// Whether an API key is set (it is never shown).
    pub has_api_key: bool,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// A stored provider, as the engine uses it. `Debug` hides the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// Unique name within the organisation.
    pub name: String,
    /// The protocol it speaks.
    pub kind: ProviderKind,
    /// The service's base URL (the kind's default when none was given).
    pub base_url: String,
    /// The service's API key.
    pub api_key: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(self.api_key.as_ref()))
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl Provider {
    /// Whether `reference` (an agent's `llm`/`stt`/`tts` provider) names this provider: its
    /// name or its id.
    pub fn is_named_by(&self, reference: &str) -> bool {
        self.name == reference || Uuid::parse_str(reference).is_ok_and(|id| id == self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut ProviderFields)) -> String {
        let mut fields = ProviderFields {
            name: Some("openai".into()),
            kind: Some(ProviderKind::OpenAi),
            ..ProviderFields::default()
        };
        change(&mut fields);
        fields.check().err().map(|e| e.field).unwrap_or_default()
    }

    #[test]
    fn the_field_list_is_the_types() {
        let every = ProviderFields {
            name: Some("n".into()),
            kind: Some(ProviderKind::Deepgram),
            base_url: Some("https://x".into()),
            api_key: Some("k".into()),
        };
        crate::parse::tests::assert_lists_every_key(&every, ProviderFields::FIELDS);
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(refused(|_| {}), "");
        assert_eq!(refused(|f| f.name = None), "name");
        assert_eq!(refused(|f| f.name = Some("a\nb".into())), "name");
        assert_eq!(refused(|f| f.kind = None), "kind");
        for url in ["ftp://x", "api.openai.com", "https://a b"] {
            assert_eq!(refused(|f| f.base_url = Some(url.into())), "base_url");
        }
        let long = format!("https://{}", "h".repeat(MAX_BASE_URL_BYTES));
        assert_eq!(refused(|f| f.base_url = Some(long)), "base_url");
        for key in [String::new(), "k\r\nX: y".into(), "k".repeat(4097)] {
            assert_eq!(refused(|f| f.api_key = Some(key)), "api_key");
        }
        assert_eq!(refused(|f| f.api_key = Some("k".repeat(4096))), "");
        let e = crate::parse::from_value::<ProviderFields>(serde_json::json!({"kind": "gpt"}))
            .unwrap_err();
        assert_eq!(e.field, "kind");
        let e = crate::parse::from_value::<ProviderFields>(serde_json::json!({"apikey": "k"}))
            .unwrap_err();
        assert_eq!(e.field, "apikey");
    }

    #[test]
    fn each_kind_has_a_default_base_url() {
        for kind in ProviderKind::ALL {
            assert!(kind.default_base_url().starts_with("https://"), "{kind}");
        }
        let fields = ProviderFields {
            kind: Some(ProviderKind::ElevenLabs),
            ..ProviderFields::default()
        };
        assert_eq!(
            fields.base_url_or_default().as_deref(),
            Some("https://api.elevenlabs.io/v1")
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let fields = ProviderFields {
            api_key: Some("sk-secret".into()),
            ..ProviderFields::default()
        };
        assert!(!format!("{fields:?}").contains("sk-secret"));
        let provider = Provider {
            id: Uuid::nil(),
            org_id: Uuid::nil(),
            name: "p".into(),
            kind: ProviderKind::OpenAi,
            base_url: "https://api.openai.com/v1".into(),
            api_key: Some("sk-secret".into()),
            created_at: 0,
        };
        assert!(!format!("{provider:?}").contains("sk-secret"));
        assert!(provider.is_named_by("p"));
        assert!(provider.is_named_by(&Uuid::nil().to_string()));
        assert!(!provider.is_named_by("q"));
    }
}
