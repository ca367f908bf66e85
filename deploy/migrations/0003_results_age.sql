-- 0003_results_age: stored results also expire by age.
--
-- A client's results were kept for its last --keep-results mutations and
-- pruned only when it wrote again, so every client id that ever wrote kept
-- up to that many rows forever: the table grew with the number of clients
-- ever seen. weft-write now also deletes results older than --results-ttl.
-- A resend of such a mutation gets ENOTFOUND, as one older than
-- --keep-results does.
--
-- Rows arrive in time order, so a BRIN index finds the old ones for the
-- cost of a summary per block range, not a btree entry per mutation.
-- Existing rows take the time of this migration.

ALTER TABLE weft_client_results
	ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX weft_client_results_created ON weft_client_results
	USING brin (created_at);
