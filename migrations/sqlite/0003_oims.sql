-- Butterfly schema, version 3 (SQLite): offline messages (OIMs, MSNP13+), kept until the
-- recipient deletes them. Limits (text size, messages per recipient) are enforced by the
-- store code (butterfly_core::oim); the checks here only back them up.
CREATE TABLE oims (
    -- The message id clients name in GetMessage / DeleteMessages (lower-case GUID text).
    id          TEXT    NOT NULL PRIMARY KEY,
    recipient   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The sender's sign-in name and friendly name as they were when it was sent (the
    -- sender's account may be gone by the time it is read).
    sender      TEXT    NOT NULL,
    sender_name TEXT    NOT NULL,
    -- ms since the Unix epoch; strictly increasing per recipient (the store takes
    -- max(now, newest + 1)), so it orders the mailbox.
    received_at INTEGER NOT NULL CHECK (received_at >= 0),
    -- The sender's X-OIM-Run-Id (GUID text) and X-OIM-Sequence-Num.
    run_id      TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    -- The decoded text (UTF-8).
    body        TEXT    NOT NULL,
    is_read     INTEGER NOT NULL DEFAULT 0 CHECK (is_read IN (0, 1))
);

-- The recipient's mailbox, oldest first.
CREATE UNIQUE INDEX oims_by_recipient ON oims (recipient, received_at);
