-- Caps that hold across every node on one database. A hold is one admitted call's slot under an
-- organisation's or a trunk's concurrency cap (scope `org:<id>` or `trunk:<id>`), taken only
-- while fewer than the cap are held and given back when the call ends; its holder is the call's
-- id (or, for a call placed to us, an id taken before its record exists). A rate bucket is one
-- scope's token bucket of calls per second.
CREATE TABLE cap_holds (
    scope    TEXT NOT NULL,
    holder   TEXT NOT NULL,
    node_id  TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    PRIMARY KEY (scope, holder)
);
CREATE INDEX cap_holds_holder ON cap_holds (holder);
CREATE INDEX cap_holds_node ON cap_holds (node_id);

CREATE TABLE rate_buckets (
    scope      TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
