-- 0001_bootstrap: the first migration; proves the migration path end to end.
-- weft_meta holds facts about the database itself as key/value text.
--
-- deploy/local/migrate runs each file in one transaction with its record in
-- weft_schema_migrations: no BEGIN/COMMIT here, and never edit a migration
-- once applied anywhere; add a new NNNN_name.sql instead.

CREATE TABLE weft_meta (
	key   text PRIMARY KEY,
	value text
);

INSERT INTO weft_meta (key, value) VALUES ('created_by', 'weft');
