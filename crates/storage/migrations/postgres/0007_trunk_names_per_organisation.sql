-- Trunk names are unique within an organisation, not across them.
ALTER TABLE trunks DROP CONSTRAINT trunks_name_key;
CREATE UNIQUE INDEX trunks_name_per_organisation ON trunks (org_id, name) WHERE deleted_at IS NULL;
