-- Key scopes replace the admin flag: `operator` (manages every organisation), `admin` (manages
-- its own organisation's keys) and `standard`. The first organisation's admin keys (the
-- bootstrapped DIALTONE_API_KEY among them) become `operator`; other organisations' admin keys
-- become `admin` of their own organisation only; the rest `standard`. The old column goes, so
-- a node of the previous release refuses every key (it fails closed) rather than reading the
-- flag that made any admin an operator.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'standard';
UPDATE api_keys SET scope = 'admin' WHERE admin <> 0;
UPDATE api_keys SET scope = 'operator'
    WHERE admin <> 0
      AND org_id = (SELECT id FROM organizations ORDER BY created_at, id LIMIT 1);
ALTER TABLE api_keys DROP COLUMN admin;
-- A key not issued here (the bootstrapped one) shows only its first 4 characters.
UPDATE api_keys SET prefix = substr(prefix, 1, 4) WHERE substr(prefix, 1, 4) <> 'dtk_';

-- Key lifecycle: optional expiry, last use (to the minute), revocation (kept for the record).
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at);

-- A disabled organisation's dispatches are refused.
ALTER TABLE organizations ADD COLUMN disabled_at BIGINT;
