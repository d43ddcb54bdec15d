-- Why answering-machine detection said what it did: the rule, the timings it used, and what a
-- voicemail message waited for (JSON).
ALTER TABLE calls ADD COLUMN answered_by_reason TEXT;
