-- Escalation: when a group started firing (the clock of its escalation steps)
-- and whom the last step called.

ALTER TABLE alert_groups ADD COLUMN firing_since BIGINT;
ALTER TABLE alert_groups ADD COLUMN escalated_to TEXT;
