-- Named positions in a platform's update stream (Telegram's getUpdates
-- offset), saved after the updates before them are in the inbox.

CREATE TABLE cursors (
    name        TEXT    PRIMARY KEY,
    value       BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
