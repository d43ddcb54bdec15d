-- Deleting a trunk, number or agent hides it; calls that used it keep their references.
ALTER TABLE trunks ADD COLUMN deleted_at BIGINT;
ALTER TABLE numbers ADD COLUMN deleted_at BIGINT;
ALTER TABLE agents ADD COLUMN deleted_at BIGINT;
