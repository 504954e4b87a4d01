-- Replicas sharing this database, the leases they hold, and which replica
-- owns each piece of in-flight work. A replica heartbeats its row; one not
-- seen for `replicas.lease` is dead, and the others take its work over.

CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,     -- random per process start
    name        TEXT    NOT NULL,        -- shown in /status (host name, pod name)
    version     TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    seen_at     BIGINT  NOT NULL
);

-- A lease is held by one replica until it expires; every new holder gets a
-- larger token, and writes made under a lease check it (fencing), so a
-- holder that lost its lease cannot move what the next holder owns.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT,                    -- replica id; NULL once released
    token       BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    acquired_at BIGINT  NOT NULL
);

-- The replica handling (inbox), delivering (outbox), running (runs) or
-- writing (answers) a row; NULL when handed back.
ALTER TABLE inbox ADD COLUMN owner TEXT;
ALTER TABLE outbox ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE answers ADD COLUMN owner TEXT;

CREATE INDEX inbox_pending_owner ON inbox (owner) WHERE state = 0;
CREATE INDEX outbox_pending_owner ON outbox (owner, id) WHERE state = 0;
