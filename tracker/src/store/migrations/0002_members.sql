-- Schema version 2: swarm membership shared between replicas. Each replica
-- writes the announces it took in batches (the newest report per peer; no
-- report: the peer left); every replica reads the rows written since its
-- last read, with an overlap, and merges them into its in-memory swarms.
-- Rows older than the expiry are deleted by whichever replica sweeps.
CREATE TABLE members (
    swarm      bytea  NOT NULL,
    peer       text   NOT NULL,
    replica    text   NOT NULL,
    report     bytea,
    at         bigint NOT NULL,
    written_ms bigint NOT NULL,
    PRIMARY KEY (swarm, peer)
);
CREATE INDEX members_written ON members (written_ms);
