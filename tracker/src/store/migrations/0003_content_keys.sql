-- Schema version 3: encrypted releases' content keys (issue 17), by
-- manifest hash, each wrapped under the tracker's at-rest key: the table
-- alone does not reveal a key.
CREATE TABLE content_keys (k bytea PRIMARY KEY, v bytea NOT NULL);
