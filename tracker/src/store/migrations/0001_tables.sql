-- Schema version 1: the tracker's durable records, one table per `Table`.
-- Keys are the same bytes sled uses, so bytea's memcmp order gives the
-- same prefix and range scans; the primary key's b-tree serves every hot
-- query (a record by id, an account's grants by prefix, a channel's
-- newest release by reverse prefix scan, the audit log by sequence).
CREATE TABLE accounts     (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE api_keys     (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE products     (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE entitlements (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE releases     (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE release_ids  (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE manifests    (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE audit        (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE meta         (k bytea PRIMARY KEY, v bytea NOT NULL);
-- Sequence counters (ids, audit numbers): one atomic upsert each.
CREATE TABLE counters     (k text PRIMARY KEY, n bigint NOT NULL);
