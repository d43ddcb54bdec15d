-- Providers: the language and speech services of an organisation's agents, named by their
-- settings (llm, stt, tts) by name or id. The API key is write-only on the API.
CREATE TABLE providers (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('openai', 'deepgram', 'cartesia', 'elevenlabs')),
    base_url   TEXT NOT NULL,
    api_key    TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX providers_name_per_organisation ON providers (org_id, name);
