-- Why a call has no (valid) structured result.
ALTER TABLE calls ADD COLUMN result_error TEXT;
