-- Dialtone's initial schema. Times are Unix epoch milliseconds; JSON columns hold text.
CREATE TABLE trunks (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    host                 TEXT NOT NULL,
    port                 BIGINT NOT NULL,
    transport            TEXT NOT NULL CHECK (transport IN ('udp', 'tcp')),
    username             TEXT,
    password             TEXT,
    realm                TEXT,
    from_domain          TEXT,
    max_concurrent_calls BIGINT,
    max_calls_per_second BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE numbers (
    id         TEXT PRIMARY KEY,
    e164       TEXT NOT NULL UNIQUE,
    trunk_id   TEXT NOT NULL REFERENCES trunks (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    config            TEXT NOT NULL,
    primary_number_id TEXT REFERENCES numbers (id),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE agent_numbers (
    agent_id  TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    number_id TEXT NOT NULL REFERENCES numbers (id),
    PRIMARY KEY (agent_id, number_id)
);

CREATE TABLE calls (
    id            TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    to_number     TEXT NOT NULL,
    from_number   TEXT NOT NULL,
    trunk_id      TEXT NOT NULL REFERENCES trunks (id),
    instructions  TEXT,
    context       TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    webhook_url   TEXT,
    status        TEXT NOT NULL,
    end_reason    TEXT,
    ended_by      TEXT,
    sip_call_id   TEXT,
    sip_status    BIGINT,
    transcript    TEXT NOT NULL DEFAULT '[]',
    result        TEXT,
    media         TEXT,
    created_at    BIGINT NOT NULL,
    dialed_at     BIGINT,
    ringing_at    BIGINT,
    answered_at   BIGINT,
    ended_at      BIGINT,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX calls_by_agent ON calls (agent_id, created_at);
CREATE INDEX calls_by_status ON calls (status, created_at);
