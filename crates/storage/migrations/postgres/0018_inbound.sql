-- Inbound calls: a call is `outbound` (dispatched) or `inbound` (answered for one of an
-- agent's numbers); a trunk may name the networks its calls come from (`inbound_cidrs`, a
-- JSON list of CIDRs) besides the addresses its host resolves to; the agents answering a
-- number are found by the number.
ALTER TABLE calls ADD COLUMN direction TEXT NOT NULL DEFAULT 'outbound'
    CHECK (direction IN ('outbound', 'inbound'));
ALTER TABLE trunks ADD COLUMN inbound_cidrs TEXT;
CREATE INDEX agent_numbers_by_number ON agent_numbers (number_id);
