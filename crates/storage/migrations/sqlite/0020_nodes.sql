-- Several nodes on one database: each node's lease (renewed while it runs), and the node that
-- owns each call (NULL for calls from before nodes were recorded).
CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
ALTER TABLE calls ADD COLUMN node_id TEXT;
CREATE INDEX calls_live_per_node ON calls (node_id, status);
