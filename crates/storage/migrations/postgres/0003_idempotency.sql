-- Idempotency keys of dispatches: the same key with the same body returns the same call.
CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    body_hash  TEXT NOT NULL,
    call_id    TEXT NOT NULL REFERENCES calls (id),
    created_at BIGINT NOT NULL
);
