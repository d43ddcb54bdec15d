-- The webhook outbox: each event is written in the transaction of the state change it
-- announces, then delivered (in order per call) by the delivery worker.
CREATE TABLE webhook_events (
    id              TEXT PRIMARY KEY,
    call_id         TEXT NOT NULL REFERENCES calls (id),
    sequence        BIGINT NOT NULL,
    type            TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    delivered_at    BIGINT,
    UNIQUE (call_id, sequence)
);

CREATE INDEX webhook_events_due ON webhook_events (state, next_attempt_at);
