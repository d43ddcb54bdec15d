-- Transfers: where a call's caller was handed to once a transfer completed, the last transfer
-- attempt (JSON: to, mode, status, sip_status, reason), and per trunk the hosts besides its own
-- that `sip:` transfer destinations may name (JSON array of host names; none by default).
ALTER TABLE calls ADD COLUMN transferred_to TEXT;
ALTER TABLE calls ADD COLUMN transfer TEXT;
ALTER TABLE trunks ADD COLUMN transfer_sip_domains TEXT NOT NULL DEFAULT '[]';
