//! Clients of OpenAI-compatible servers (OpenAI, Groq, vLLM, llama.cpp, Ollama, speaches,
//! Kokoro-FastAPI…): one [`OpenAiProvider`] (where the server is and its key) shared by the
//! three services it offers:
//!
//! * [`OpenAiChat`] — `POST {base_url}/chat/completions`, streamed as Server-Sent Events;
//! * [`OpenAiTranscriber`] — `POST {base_url}/audio/transcriptions`, a multipart WAV upload;
//! * [`OpenAiSpeech`] — `POST {base_url}/audio/speech`, 24 kHz PCM streamed back.
//!
//! The key goes out only as `Authorization: Bearer …`, only when one is set; it is never
//! logged, never shown by `Debug`, and scrubbed from any error text a server echoes it in.

pub mod chat;
pub mod speech;
pub mod transcribe;

use std::time::Duration;

pub use chat::OpenAiChat;
pub use speech::OpenAiSpeech;
pub use transcribe::OpenAiTranscriber;

use crate::error::AgentError;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of an error body is kept in [`AgentError::Status`].
const ERROR_DETAIL_CHARS: usize = 300;

/// Where an OpenAI-compatible server is and how to authenticate to it.
#[derive(Clone)]
pub struct OpenAiProvider {
    name: String,
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// The provider `name` (as the organisation named it; errors carry it) at `base_url`
    /// (e.g. `https://api.openai.com/v1`; the endpoints' paths are appended), with its own
    /// HTTP client.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Result<Self, AgentError> {
        let name = name.into();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| AgentError::Unreachable {
                provider: name.clone(),
                detail: format!("the HTTP client could not be made: {}", describe(&e)),
            })?;
        Ok(Self::with_client(name, base_url, api_key, http))
    }

    /// Like [`new`](Self::new), sharing `http` (its connection pool) with others.
    pub fn with_client(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
            http,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a key is set.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// A POST to `{base_url}{path}`, authenticated when a key is set.
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.post(format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// `text` with the key, should a server have echoed it, blotted out.
    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "[redacted]"),
            None => text.to_owned(),
        }
    }

    /// A transport failure as an [`AgentError`]: a connection lost mid-answer is
    /// [`AgentError::Unreachable`] (asking again may help), an undecodable body a protocol error.
    fn transport_error(&self, error: &reqwest::Error, waited: Duration) -> AgentError {
        if error.is_timeout() {
            AgentError::Timeout {
                provider: self.name.clone(),
                after: waited,
            }
        } else if error.is_decode() {
            self.protocol(describe(error))
        } else {
            AgentError::Unreachable {
                provider: self.name.clone(),
                detail: self.scrub(&describe(error)),
            }
        }
    }

    fn timeout(&self, after: Duration) -> AgentError {
        AgentError::Timeout {
            provider: self.name.clone(),
            after,
        }
    }

    fn protocol(&self, detail: impl AsRef<str>) -> AgentError {
        AgentError::Protocol {
            provider: self.name.clone(),
            detail: self.scrub(detail.as_ref()),
        }
    }

    /// Sends `request`, waiting at most `limit` for the answer's head; an error status becomes
    /// [`AgentError::Status`] with the start of its body (the `error.message` of an
    /// OpenAI-style error body when there is one).
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        limit: Duration,
    ) -> Result<reqwest::Response, AgentError> {
        let response = tokio::time::timeout(limit, request.send())
            .await
            .map_err(|_| self.timeout(limit))?
            .map_err(|e| self.transport_error(&e, limit))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(limit, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(AgentError::Status {
            provider: self.name.clone(),
            status: status.as_u16(),
            detail: self.scrub(&error_detail(&body)),
        })
    }
}

/// The message of an OpenAI-style error body (`{"error": {"message": …}}`), else the body's
/// start, cut to [`ERROR_DETAIL_CHARS`].
fn error_detail(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?;
        error
            .get("message")
            .and_then(serde_json::Value::as_str)
            .or_else(|| error.as_str())
    });
    let text = message.unwrap_or(body).trim();
    let mut detail: String = text.chars().take(ERROR_DETAIL_CHARS).collect();
    if detail.len() < text.len() {
        detail.push('…');
    }
    detail
}

/// A reqwest error with its causes (its own text alone is often just "error sending request"),
/// without the URL.
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_not_in_debug_and_is_scrubbed_from_errors() {
        let provider = OpenAiProvider::with_client(
            "acme",
            "http://127.0.0.1:9/v1/",
            Some("sk-secret-123".into()),
            reqwest::Client::new(),
        );
        let shown = format!("{provider:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(provider.base_url(), "http://127.0.0.1:9/v1");
        assert_eq!(
            provider.scrub("Incorrect API key provided: sk-secret-123"),
            "Incorrect API key provided: [redacted]"
        );
    }

    #[test]
    fn error_details_prefer_the_message_and_are_cut() {
        assert_eq!(
            error_detail(r#"{"error": {"message": "model not found", "type": "x"}}"#),
            "model not found"
        );
        assert_eq!(error_detail(r#"{"error": "overloaded"}"#), "overloaded");
        assert_eq!(error_detail(" Bad Gateway \n"), "Bad Gateway");
        let long = "é".repeat(1000);
        assert_eq!(
            error_detail(&long).chars().count(),
            ERROR_DETAIL_CHARS + 1,
            "cut on a character boundary, with an ellipsis"
        );
    }
}
