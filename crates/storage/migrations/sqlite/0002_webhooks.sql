-- The webhook outbox: each event is written in the transaction of the state change it
-- announces, then delivered (in order per call) by the delivery worker.
CREATE TABLE webhook_events (
    id              TEXT PRIMARY KEY,
    call_id         TEXT NOT NULL REFERENCES calls (id),
    sequence        INTEGER NOT NULL,
    type            TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    INTEGER,
    UNIQUE (call_id, sequence)
);

CREATE INDEX webhook_events_due ON webhook_events (state, next_attempt_at);
