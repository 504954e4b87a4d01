-- Alerts: groups (one card each per routed chat), the alerts in them (deduplicated
-- by the source's fingerprint), and every state change with its time.

CREATE TABLE alert_groups (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key           TEXT    NOT NULL UNIQUE, -- "<source>:<the source's group key or configured labels>"
    source              TEXT    NOT NULL,
    labels              TEXT    NOT NULL,        -- JSON object: the labels the group is keyed by
    state               TEXT    NOT NULL,        -- firing | resolved
    severity            TEXT    NOT NULL,        -- highest severity among its firing alerts
    firing              BIGINT  NOT NULL DEFAULT 0,
    total               BIGINT  NOT NULL DEFAULT 0,
    external_url        TEXT,
    acked_by            TEXT,
    acked_at            BIGINT,
    silenced_by         TEXT,
    silenced_at         BIGINT,
    silenced_until      BIGINT,
    silence_ids         TEXT,                    -- JSON array of Alertmanager silence ids
    resolved_by         TEXT,
    last_error          TEXT,                    -- shown on the card (e.g. Alertmanager refused a silence)
    escalation_level    BIGINT  NOT NULL DEFAULT 0,
    next_escalation_at  BIGINT,
    version             BIGINT  NOT NULL DEFAULT 1, -- bumped on every change the card shows
    dirty               BIGINT  NOT NULL DEFAULT 1, -- 1 until the card of this version is queued
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE INDEX alert_groups_dirty ON alert_groups (dirty);
CREATE INDEX alert_groups_state ON alert_groups (state, id);
CREATE INDEX alert_groups_escalation ON alert_groups (next_escalation_at);

CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    group_id     BIGINT  NOT NULL REFERENCES alert_groups (id),
    alertname    TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    status       TEXT    NOT NULL, -- firing | resolved
    labels       TEXT    NOT NULL, -- JSON object
    annotations  TEXT    NOT NULL, -- JSON object
    links        TEXT    NOT NULL, -- JSON array of [label, url]
    starts_at    BIGINT,
    ends_at      BIGINT,
    first_seen   BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    received     BIGINT  NOT NULL DEFAULT 1, -- notifications of this alert so far
    UNIQUE (source, fingerprint)
);
CREATE INDEX alerts_group ON alerts (group_id, status);

CREATE TABLE alert_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id  BIGINT  NOT NULL,
    alert_id  BIGINT,          -- NULL for what happened to the whole group (ack, silence)
    at        BIGINT  NOT NULL,
    kind      TEXT    NOT NULL, -- firing, updated, resolved, acked, silenced, unsilenced, escalated, refused
    actor     TEXT,
    detail    TEXT
);
CREATE INDEX alert_history_group ON alert_history (group_id, id);

-- A card update waiting in the outbox is superseded by a later one for the same card and chat.
ALTER TABLE outbox ADD COLUMN card_update BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbox_card ON outbox (card_key, state);
