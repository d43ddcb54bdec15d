-- The built-in agent's figures (turns, latencies, interruptions, tool calls) and its summary.
ALTER TABLE calls ADD COLUMN agent_stats TEXT;
ALTER TABLE calls ADD COLUMN summary TEXT;
