-- A trunk's codec preference: the codecs to offer, best first, as comma-separated wire names
-- (`g722,pcmu`); NULL offers the default preference.
ALTER TABLE trunks ADD COLUMN codecs TEXT;
