-- An organisation can be removed: hidden from the API, its keys revoked, its calls kept on record.
ALTER TABLE organizations ADD COLUMN deleted_at BIGINT;
