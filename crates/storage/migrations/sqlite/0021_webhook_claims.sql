-- Several nodes deliver from one outbox: a node claims the events it is about to deliver
-- (which node, until when), so each event goes out from one node; a claim that ran out (its
-- node died) lets another node take the event.
ALTER TABLE webhook_events ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_events ADD COLUMN claim_until INTEGER;
