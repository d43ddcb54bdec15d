-- What ending the call on the wire needs (JSON: the answered dialog, or the INVITE still
-- pending), kept so that the next start can send the BYE or CANCEL of a call a killed
-- process left live.
ALTER TABLE calls ADD COLUMN sip_dialog TEXT;
