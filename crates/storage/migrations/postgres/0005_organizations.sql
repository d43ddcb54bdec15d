-- Tenants: every trunk, number, agent and call belongs to an organisation; API keys are stored
-- as SHA-256 hashes and belong to one too.
CREATE TABLE organizations (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    max_concurrent_calls BIGINT,
    max_calls_per_second BIGINT,
    created_at           BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    key_hash   TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    admin      BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

ALTER TABLE trunks ADD COLUMN org_id TEXT REFERENCES organizations (id);
ALTER TABLE numbers ADD COLUMN org_id TEXT REFERENCES organizations (id);
ALTER TABLE agents ADD COLUMN org_id TEXT REFERENCES organizations (id);
ALTER TABLE calls ADD COLUMN org_id TEXT REFERENCES organizations (id);
CREATE INDEX calls_by_org ON calls (org_id, created_at);
