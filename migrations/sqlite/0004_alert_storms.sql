-- Storm control: where each alert group is shown in each chat. A chat gets at
-- most a configured number of new group cards per window; groups beyond that
-- are folded into the chat's digest card, updated in place.

CREATE TABLE alert_digests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    platform    TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    opened_at   BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX alert_digests_chat ON alert_digests (platform, chat_id, id);

CREATE TABLE alert_placements (
    group_id    BIGINT  NOT NULL,
    platform    TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    digest_id   BIGINT,          -- NULL: the group has its own card in this chat
    placed_at   BIGINT  NOT NULL,
    PRIMARY KEY (group_id, platform, chat_id)
);
CREATE INDEX alert_placements_chat ON alert_placements (platform, chat_id, placed_at);
CREATE INDEX alert_placements_digest ON alert_placements (digest_id);
