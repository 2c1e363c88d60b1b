-- Butterfly schema, version 1 (SQLite).
--
-- Immutable once released: sqlx records a checksum of every applied migration, so any
-- change goes into a new, higher-numbered file (see ../README.md).
--
-- The list rules live in butterfly_core::lists::apply; the constraints here are a second
-- line of defence that turns a rules bug into a failed (rolled back) edit instead of
-- corrupt lists.

-- Accounts and the per-account list settings.
--
-- AUTOINCREMENT so the id of a deleted account is never handed to a new one: ids end up
-- in tickets, sessions and logs, and must not start naming somebody else.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The sign-in name, already normalised to lower case by Email::parse.
    email         TEXT    NOT NULL UNIQUE CHECK (email = lower(email)),
    friendly_name TEXT    NOT NULL,
    -- argon2id PHC string.
    password_hash TEXT    NOT NULL,
    -- MSNP2-7 MD5 sign-in secret; both NULL unless the account opted in.
    md5_salt      TEXT,
    md5_hash      TEXT,
    -- BLP: 'AL' (everyone not blocked sees me) or 'BL' (only my AL does).
    privacy       TEXT    NOT NULL DEFAULT 'AL' CHECK (privacy IN ('AL', 'BL')),
    -- GTC: 'A' (ask when someone adds me) or 'N'.
    gtc           TEXT    NOT NULL DEFAULT 'A' CHECK (gtc IN ('A', 'N')),
    -- Bumped by every change to this user's lists, including RL changes made by others;
    -- MSNP2-9 clients cache their lists by it.
    list_version  INTEGER NOT NULL DEFAULT 0 CHECK (list_version >= 0),
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    CHECK ((md5_salt IS NULL) = (md5_hash IS NULL))
);

-- User-defined contact groups. Group 0 ("Other Contacts") is implicit and never stored.
-- Not called "groups": GROUPS is an SQL keyword (window frames) in SQLite and Postgres.
CREATE TABLE list_groups (
    owner  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The legacy numeric id (MSNP7-9).
    number INTEGER NOT NULL CHECK (number > 0),
    -- The id MSNP10+ clients use, as a lower-case hyphenated UUID.
    guid   TEXT    NOT NULL,
    name   TEXT    NOT NULL,
    PRIMARY KEY (owner, number),
    UNIQUE (owner, name),
    UNIQUE (owner, guid)
) WITHOUT ROWID;

-- One row per (owner, contact) pair that appears on any of the owner's lists.
--
-- `lists` is the LST bit mask: FL=1, AL=2, BL=4, RL=8, PL=16. RL on owner's row about X is
-- written by X's edits (X added owner to FL), all other bits by owner's own edits; both
-- happen inside BEGIN IMMEDIATE transactions, so neither overwrites the other. A row whose
-- mask would become 0 is deleted instead, hence the CHECK.
CREATE TABLE contacts (
    owner    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    contact  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The contact id MSNP10+ clients use.
    guid     TEXT    NOT NULL,
    lists    INTEGER NOT NULL CHECK (lists BETWEEN 1 AND 31),
    -- SBP MFN: the owner's own name for the contact.
    nickname TEXT,
    PRIMARY KEY (owner, contact),
    UNIQUE (owner, guid)
) WITHOUT ROWID;

-- Reverse lookups: "who has me on a list" (peer views, RL) and the cascade when an
-- account is deleted.
CREATE INDEX contacts_by_contact ON contacts (contact, owner);

-- Group membership of FL contacts.
CREATE TABLE contact_groups (
    owner   INTEGER NOT NULL,
    contact INTEGER NOT NULL,
    number  INTEGER NOT NULL,
    PRIMARY KEY (owner, contact, number),
    FOREIGN KEY (owner, contact) REFERENCES contacts (owner, contact) ON DELETE CASCADE,
    FOREIGN KEY (owner, number) REFERENCES list_groups (owner, number) ON DELETE CASCADE
) WITHOUT ROWID;

-- Serves the cascade from list_groups (the primary key covers the one from contacts).
CREATE INDEX contact_groups_by_group ON contact_groups (owner, number);

-- PRP phone numbers and flags (PHH, PHW, PHM, MOB, MBE, WWE). An empty value is stored
-- as no row.
CREATE TABLE properties (
    owner INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key   TEXT    NOT NULL,
    value TEXT    NOT NULL CHECK (value <> ''),
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
