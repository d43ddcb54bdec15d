-- Call recording: the finished recording's description (JSON text: id, url, format,
-- channels, duration_ms, bytes, sha256) and why a recording the agent asked for is missing.
-- Retention purges recordings of calls that ended long enough ago.
ALTER TABLE calls ADD COLUMN recording TEXT;
ALTER TABLE calls ADD COLUMN recording_error TEXT;
CREATE INDEX calls_recorded ON calls (ended_at) WHERE recording IS NOT NULL;
