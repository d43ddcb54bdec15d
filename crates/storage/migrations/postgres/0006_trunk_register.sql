-- Trunks that register with their provider (REGISTER with digest, refreshed).
ALTER TABLE trunks ADD COLUMN register BIGINT NOT NULL DEFAULT 0;
