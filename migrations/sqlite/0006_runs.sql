-- Ops runs (deploys, rollbacks and any command file with [run]), their
-- approvals, the locks that keep two runs off one target, and the audit log.

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE, -- what asked for it: a replayed event finds its run
    command         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,        -- run | rollback
    target          TEXT    NOT NULL,        -- the lock key, e.g. payments/prod
    app             TEXT,                    -- deployment history (commands with [run.history])
    env             TEXT,
    version         TEXT,
    from_version    TEXT,                    -- deployed before this run (the preview's "current")
    rollback_of     BIGINT,
    args            TEXT    NOT NULL,        -- JSON: the bound arguments
    plan            TEXT    NOT NULL,        -- JSON: the rendered steps and rollback steps
    requester       TEXT    NOT NULL,        -- principal key
    requester_id    TEXT    NOT NULL,        -- platform:user id
    chat_platform   TEXT    NOT NULL,
    chat_id         TEXT    NOT NULL,
    thread_id       TEXT,
    message_id      TEXT,
    approvals_needed BIGINT NOT NULL,
    approver_role   TEXT,
    state           TEXT    NOT NULL,        -- pending | running | succeeded | failed | rejected | cancelled | expired | interrupted
    step            TEXT,                    -- the step running or last run
    exit_code       BIGINT,
    output          TEXT,                    -- capped, redacted
    output_digest   TEXT,                    -- sha256 of everything the steps printed
    error           TEXT,
    closed_by       TEXT,                    -- who rejected or cancelled
    expires_at      BIGINT,                  -- approvals must be complete by then
    created_at      BIGINT  NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT
);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_deploys ON runs (app, env, id);

CREATE TABLE run_approvals (
    run_id      BIGINT NOT NULL REFERENCES runs (id),
    approver    TEXT   NOT NULL,
    approver_id TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (run_id, approver)
);

-- One row per target while a run on it is pending or running.
CREATE TABLE run_locks (
    target  TEXT   PRIMARY KEY,
    run_id  BIGINT NOT NULL,
    at      BIGINT NOT NULL
);

-- Append-only: rows are never updated or deleted (the triggers refuse it).
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT  NOT NULL,
    actor         TEXT    NOT NULL,        -- principal key, or "opsclaw" for the bot itself
    actor_id      TEXT    NOT NULL,        -- platform:user id
    action        TEXT    NOT NULL,        -- request | approve | reject | cancel | start | finish | refuse | expire | interrupt
    command       TEXT    NOT NULL,
    run_id        BIGINT,
    target        TEXT,
    args          TEXT,                    -- JSON, redacted
    approvals     TEXT,                    -- JSON array of approvers
    result        TEXT    NOT NULL,
    exit_code     BIGINT,
    duration_ms   BIGINT,
    output_digest TEXT,
    chat          TEXT,
    message_id    TEXT,
    detail        TEXT
);
CREATE INDEX audit_log_run ON audit_log (run_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
