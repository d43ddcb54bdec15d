//! `builtin:agent` at dispatch: the agent's `llm`, `stt` and `tts` resolved to the
//! organisation's providers and made into clients, the system prompt and first message built
//! (placeholders filled), the tools offered. Done before the call is written, so a provider
//! that cannot be used (deleted, of a kind this build cannot speak, on an address the policy
//! refuses) refuses the dispatch rather than failing the call once someone answers.

use std::sync::Arc;
use std::time::Duration;

use dialtone_agent::openai::{OpenAiChat, OpenAiProvider, OpenAiSpeech, OpenAiTranscriber};
use dialtone_agent::prompt::system_prompt;
use dialtone_agent::tools::Toolbox;
use dialtone_agent::{CartesiaSpeech, DeepgramTranscriber, ElevenLabsSpeech, StreamingProvider};
use dialtone_agent::{
    ChatModel, ConversationConfig, SpeechToText, StreamingSpeechToText, StreamingTextToSpeech,
    TextToSpeech,
};
use dialtone_model::provider::{Provider, ProviderKind};
use dialtone_model::{
    AgentFields, Amd, BUILTIN_AGENT, BUILTIN_ESPEAK, BargeIn, SttSetting, placeholder,
};
use serde_json::Value;
use uuid::Uuid;

use crate::brains::agent::{AgentSetup, FirstAudio, ToolRunner};
use crate::{Engine, EngineError, outbound};

/// Starts synthesising the agent's first message (while the phone rings), so it plays the
/// moment a person answers.
pub(crate) fn synthesise_first_message(
    setup: &mut AgentSetup,
    voice: Option<&str>,
    language: Option<&str>,
) {
    if let Some(text) = setup.conversation.first_message.clone() {
        let audio = setup.tts.0.speak(&text, voice, language);
        setup.first_audio = Some(Arc::new(std::sync::Mutex::new(Some(FirstAudio {
            text,
            audio,
        }))));
    }
}

/// A websocket provider's client (Deepgram, Cartesia, ElevenLabs), which connects only to
/// addresses `policy` allows, resolved as it connects.
fn streaming(provider: Provider, policy: &outbound::PrivateDestinations) -> StreamingProvider {
    StreamingProvider::new(provider.name, provider.base_url, provider.api_key)
        .with_resolver(Arc::new(outbound::PolicyResolver::new(policy.clone())))
}

/// A provider of a kind that cannot do the agent's `field`'s job.
fn unfit(field: &str, name: &str, kind: ProviderKind) -> EngineError {
    EngineError::AgentProvider {
        field: format!("{field}.provider"),
        detail: format!(
            "provider \"{name}\" is of kind {}, which cannot do this",
            kind.as_str()
        ),
    }
}

/// How long a tool call may take, connection included.
const TOOL_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// The conversation, clients and tools of a call whose `brain` (the agent's, else the
    /// daemon's default) is `builtin:agent`; `None` for other brains.
    pub(crate) async fn agent_setup(
        &self,
        org_id: Uuid,
        brain: &str,
        settings: &AgentFields,
        instructions: Option<&str>,
        context: &Value,
    ) -> Result<Option<AgentSetup>, EngineError> {
        if brain != BUILTIN_AGENT {
            return Ok(None);
        }
        let unusable = |field: &str, detail: String| EngineError::AgentProvider {
            field: field.to_owned(),
            detail,
        };
        let (Some(llm), Some(stt)) = (&settings.llm, &settings.stt) else {
            return Err(unusable(
                "llm",
                "builtin:agent needs `llm` and `stt`".into(),
            ));
        };
        let llm_provider = self.provider(org_id, "llm", &llm.provider).await?;
        let llm_name = llm_provider.name.clone();
        let llm_kind = llm_provider.kind.as_str().to_owned();
        let chat = match llm_provider.kind {
            ProviderKind::OpenAi => OpenAiChat::new(self.openai(llm_provider)?, llm.model.clone())
                .with_temperature(llm.temperature.map(f64::from))
                .with_max_tokens(llm.max_tokens),
            other => return Err(unfit("llm", &llm_name, other)),
        };
        let (transcriber, live_stt, stt_kind) = self.transcriber(org_id, stt).await?;
        // The streaming synthesisers speak each agent line in one stream too (`live_tts`).
        let (tts, live_tts): (_, Option<Arc<dyn StreamingTextToSpeech>>) = match &settings.tts {
            Some(tts) if tts.provider != BUILTIN_ESPEAK => {
                let provider = self.provider(org_id, "tts", &tts.provider).await?;
                let name = provider.name.clone();
                let kind = provider.kind.as_str().to_owned();
                let model = tts.model.clone();
                let (speech, live): (
                    Arc<dyn TextToSpeech>,
                    Option<Arc<dyn StreamingTextToSpeech>>,
                ) = match provider.kind {
                    ProviderKind::OpenAi => {
                        let speech = OpenAiSpeech::new(self.openai(provider)?);
                        let speech = match model {
                            Some(model) => speech.with_model(model),
                            None => speech,
                        };
                        (Arc::new(speech), None)
                    }
                    ProviderKind::Cartesia => {
                        let speech = CartesiaSpeech::new(streaming(
                            provider,
                            &self.config.private_destinations,
                        ));
                        let speech = Arc::new(match model {
                            Some(model) => speech.with_model(model),
                            None => speech,
                        });
                        (speech.clone(), Some(speech))
                    }
                    ProviderKind::ElevenLabs => {
                        let speech = ElevenLabsSpeech::new(streaming(
                            provider,
                            &self.config.private_destinations,
                        ));
                        let speech = Arc::new(match model {
                            Some(model) => speech.with_model(model),
                            None => speech,
                        });
                        (speech.clone(), Some(speech))
                    }
                    other => return Err(unfit("tts", &name, other)),
                };
                ((speech, kind), live)
            }
            _ => ((self.tts.clone(), BUILTIN_ESPEAK.to_owned()), None),
        };
        let first_message = settings
            .first_message
            .as_deref()
            .map(|m| placeholder::fill(m, context));
        let destinations = settings.transfer_destinations.clone().unwrap_or_default();
        let tools = settings.tools.clone().unwrap_or_default();
        let client = outbound::Client::new(
            self.config.private_destinations.clone(),
            TOOL_CLIENT_TIMEOUT,
        )
        .map_err(|e| unusable("tools", e.to_string()))?;
        Ok(Some(AgentSetup {
            conversation: ConversationConfig {
                system_prompt: system_prompt(
                    settings.persona.as_deref(),
                    instructions,
                    settings.language.as_deref(),
                    context,
                ),
                first_message,
                toolbox: Toolbox::new(&tools, &destinations),
                destinations,
                barge_in_off: settings.barge_in == Some(BargeIn::Off),
                mask_dtmf: settings.mask_dtmf == Some(true),
                speech_per_line: live_tts.is_some(),
            },
            llm: (Arc::new(chat) as Arc<dyn ChatModel>, llm_kind),
            stt: (transcriber, stt_kind),
            live_stt,
            live_tts,
            tts,
            tools: ToolRunner::new(client, Arc::from(self.config.signing_secret.as_str())),
            amd: matches!(settings.amd, Some(Amd::On(_))),
            first_audio: None,
        }))
    }

    /// The speech recogniser answering-machine detection listens with when the brain is not
    /// `builtin:agent` (which has its own): the agent's `stt`, when it sets one and `amd` is on.
    pub(crate) async fn amd_listener(
        &self,
        org_id: Uuid,
        brain: &str,
        settings: &AgentFields,
    ) -> Result<Option<Arc<dyn SpeechToText>>, EngineError> {
        match (&settings.stt, &settings.amd) {
            (Some(stt), Some(Amd::On(_))) if brain != BUILTIN_AGENT => {
                Ok(Some(self.transcriber(org_id, stt).await?.0))
            }
            _ => Ok(None),
        }
    }

    /// The recogniser of the agent's `stt` setting (per utterance, and streaming when the
    /// provider streams), and its provider's kind (the metrics' label).
    async fn transcriber(
        &self,
        org_id: Uuid,
        stt: &SttSetting,
    ) -> Result<
        (
            Arc<dyn SpeechToText>,
            Option<Arc<dyn StreamingSpeechToText>>,
            String,
        ),
        EngineError,
    > {
        let provider = self.provider(org_id, "stt", &stt.provider).await?;
        let name = provider.name.clone();
        let kind = provider.kind.as_str().to_owned();
        match provider.kind {
            ProviderKind::OpenAi => Ok((
                Arc::new(OpenAiTranscriber::new(
                    self.openai(provider)?,
                    stt.model.clone(),
                )),
                None,
                kind,
            )),
            ProviderKind::Deepgram => {
                let deepgram = Arc::new(DeepgramTranscriber::new(
                    streaming(provider, &self.config.private_destinations),
                    stt.model.clone(),
                ));
                let live: Arc<dyn StreamingSpeechToText> = deepgram.clone();
                Ok((deepgram, Some(live), kind))
            }
            other => Err(unfit("stt", &name, other)),
        }
    }

    /// The organisation's provider `reference` (a name or an id) for the agent's `field`, its
    /// base URL checked by the outbound-address policy.
    async fn provider(
        &self,
        org_id: Uuid,
        field: &str,
        reference: &str,
    ) -> Result<Provider, EngineError> {
        let provider = self
            .storage
            .find_provider(org_id, reference)
            .await?
            .ok_or_else(|| EngineError::AgentProvider {
                field: format!("{field}.provider"),
                detail: format!("the organisation has no provider \"{reference}\""),
            })?;
        outbound::vet_url(&provider.base_url, &self.config.private_destinations)
            .await
            .map_err(|e| EngineError::AgentProvider {
                field: format!("{field}.provider"),
                detail: format!("provider \"{}\": {e}", provider.name),
            })?;
        Ok(provider)
    }

    /// An OpenAI-compatible provider's client, on the shared connection pool.
    fn openai(&self, provider: Provider) -> Result<OpenAiProvider, EngineError> {
        Ok(OpenAiProvider::with_client(
            provider.name,
            provider.base_url,
            provider.api_key,
            self.provider_http()?,
        ))
    }

    /// The HTTP client of every provider request (one connection pool for all calls), which
    /// reaches only addresses the outbound policy allows.
    fn provider_http(&self) -> Result<reqwest::Client, EngineError> {
        if let Some(http) = self.provider_http.get() {
            return Ok(http.clone());
        }
        let http =
            outbound::http_client(self.config.private_destinations.clone()).map_err(|e| {
                EngineError::AgentProvider {
                    field: "llm.provider".into(),
                    detail: e.to_string(),
                }
            })?;
        Ok(self.provider_http.get_or_init(|| http).clone())
    }
}
