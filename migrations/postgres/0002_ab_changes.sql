-- Butterfly schema, version 2 (Postgres): change stamps and tombstones, so the WLM address
-- book can answer delta syncs ("what changed since T"). The same columns, table and checks
-- as ../sqlite/0002_ab_changes.sql.
--
-- Stamps are milliseconds since the Unix epoch from one counter per owner
-- (users.ab_stamp): every edit takes max(now, ab_stamp + 1), so they strictly increase per
-- owner, and stamps every row it writes with it. 0 means "before change stamps": rows that
-- exist when this runs keep 0. Adding a column with a constant default rewrites no rows.

-- The owner's counter: the stamp of the last edit that changed the owner's lists or
-- settings, including RL changes made by others.
ALTER TABLE users ADD COLUMN ab_stamp BIGINT NOT NULL DEFAULT 0 CHECK (ab_stamp >= 0);
-- Stamp of the last edit of the owner's own settings (privacy, GTC, friendly name,
-- properties): the WLM "Me" contact.
ALTER TABLE users ADD COLUMN settings_changed_at BIGINT NOT NULL DEFAULT 0
    CHECK (settings_changed_at >= 0);

-- Stamp of the edit that last wrote the row (lists, groups, nickname), in its owner's
-- counter.
ALTER TABLE contacts ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0 CHECK (changed_at >= 0);
ALTER TABLE list_groups ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0 CHECK (changed_at >= 0);

-- Deleted contact rows and groups, written in the deleting transaction (under the owner's
-- row lock, like every write of the owner's lists). Kept at least
-- butterfly_core::lists::TOMBSTONE_RETENTION (30 days); expired ones are purged a few at a
-- time whenever the owner deletes something.
CREATE TABLE ab_tombstones (
    owner      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT   NOT NULL CHECK (kind IN ('contact', 'group')),
    -- The deleted row's GUID.
    guid       UUID   NOT NULL,
    -- The contact's sign-in name at deletion; groups have none.
    email      TEXT   COLLATE "C" CHECK ((kind = 'contact') = (email IS NOT NULL)),
    -- The deleting edit's stamp, in the owner's counter.
    deleted_at BIGINT NOT NULL CHECK (deleted_at >= 0),
    PRIMARY KEY (owner, kind, guid)
);

-- "Tombstones since T" and the purge.
CREATE INDEX ab_tombstones_by_time ON ab_tombstones (owner, deleted_at);
