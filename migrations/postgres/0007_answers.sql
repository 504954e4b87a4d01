-- Answers a model is writing into their card. A row is written with the
-- "writing" card and deleted with the final one, so an answer cut off by a
-- crash is still here at the next start, which writes it again.
CREATE TABLE answers (
    card_key        TEXT    PRIMARY KEY,     -- the answer card's key (ask:<event id>)
    chat_platform   TEXT    NOT NULL,
    chat_id         TEXT    NOT NULL,
    reply_to        TEXT,                    -- the question's message
    thread_id       TEXT,
    locale          TEXT    NOT NULL,
    question        TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);
