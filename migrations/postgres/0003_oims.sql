-- Butterfly schema, version 3 (Postgres): offline messages (OIMs, MSNP13+), kept until the
-- recipient deletes them. The same table and checks as ../sqlite/0003_oims.sql. Limits
-- (text size, messages per recipient) are enforced by the store code
-- (butterfly_core::oim), under the recipient's users row lock; the checks here only back
-- them up.
CREATE TABLE oims (
    -- The message id clients name in GetMessage / DeleteMessages.
    id          UUID    NOT NULL PRIMARY KEY,
    recipient   BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The sender's sign-in name and friendly name as they were when it was sent (the
    -- sender's account may be gone by the time it is read).
    sender      TEXT    COLLATE "C" NOT NULL,
    sender_name TEXT    NOT NULL,
    -- ms since the Unix epoch; strictly increasing per recipient (the store takes
    -- max(now, newest + 1)), so it orders the mailbox.
    received_at BIGINT  NOT NULL CHECK (received_at >= 0),
    -- The sender's X-OIM-Run-Id and X-OIM-Sequence-Num.
    run_id      UUID    NOT NULL,
    seq         BIGINT  NOT NULL CHECK (seq >= 0),
    -- The decoded text.
    body        TEXT    NOT NULL,
    is_read     BOOLEAN NOT NULL DEFAULT FALSE
);

-- The recipient's mailbox, oldest first.
CREATE UNIQUE INDEX oims_by_recipient ON oims (recipient, received_at);
