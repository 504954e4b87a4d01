-- The event pipeline: inbox (dedup + crash recovery), outbox (durable replies),
-- card posts (to update every copy of a card) and button action tokens.

CREATE TABLE inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    platform     TEXT    NOT NULL,
    chat_id      TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    state        BIGINT  NOT NULL DEFAULT 0, -- 0 pending, 1 done
    received_at  BIGINT  NOT NULL,
    done_at      BIGINT
);
CREATE INDEX inbox_pending ON inbox (state, seq);
CREATE INDEX inbox_done_at ON inbox (done_at);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    idem_key         TEXT    NOT NULL UNIQUE,
    platform         TEXT    NOT NULL,
    chat_id          TEXT    NOT NULL,
    card_key         TEXT,
    payload          TEXT    NOT NULL,
    state            BIGINT  NOT NULL DEFAULT 0, -- 0 pending, 1 sent, 2 failed
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX outbox_pending ON outbox (state, id);
CREATE INDEX outbox_finished_at ON outbox (finished_at);

CREATE TABLE card_posts (
    card_key    TEXT   NOT NULL,
    platform    TEXT   NOT NULL,
    chat_id     TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    posted_at   BIGINT NOT NULL,
    PRIMARY KEY (card_key, platform, chat_id, message_id)
);

CREATE TABLE action_tokens (
    token       TEXT   PRIMARY KEY,
    card_key    TEXT   NOT NULL,
    platform    TEXT   NOT NULL,
    chat_id     TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    role        TEXT,
    only_keys   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX action_tokens_expires_at ON action_tokens (expires_at);
