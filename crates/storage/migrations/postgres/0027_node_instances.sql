-- Which running process holds each node's lease (a fresh id each start), so a second process
-- started under a node id already live is refused, and a process whose lease another took over
-- is fenced at its next renewal.
ALTER TABLE nodes ADD COLUMN instance TEXT;
