-- Who answered (answering-machine detection): human, machine or unknown.
ALTER TABLE calls ADD COLUMN answered_by TEXT;
