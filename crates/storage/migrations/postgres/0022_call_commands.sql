-- Commands for a call owned by another node (a hang-up, a transfer): the node asked writes a
-- row for the owner, which takes it up, carries it out on the live call and writes the answer.
CREATE TABLE call_commands (
    id         TEXT PRIMARY KEY,
    call_id    TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    command    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    taken_at   BIGINT,
    answer     TEXT
);
CREATE INDEX call_commands_waiting ON call_commands (node_id, taken_at);
