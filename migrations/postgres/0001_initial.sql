-- Butterfly schema, version 1 (Postgres).
--
-- The same tables, keys and checks as ../sqlite/0001_initial.sql, in Postgres types; the
-- two stores must behave identically, so a change here is a change there (see ../README.md).
--
-- Immutable once released: sqlx records a checksum of every applied migration, so any
-- change goes into a new, higher-numbered file.
--
-- The list rules live in butterfly_core::lists::apply; the constraints here are a second
-- line of defence that turns a rules bug into a failed (rolled back) edit instead of
-- corrupt lists.

-- Accounts and the per-account list settings.
--
-- An identity column draws from a sequence that never goes back, so the id of a deleted
-- account is never handed to a new one (SQLite's AUTOINCREMENT): ids end up in tickets,
-- sessions and logs, and must not start naming somebody else.
CREATE TABLE users (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The sign-in name, already normalised to lower case by Email::parse; uniqueness is
    -- therefore case-insensitive, exactly as in SQLite. COLLATE "C" compares and sorts
    -- bytewise like SQLite's BINARY, so "all accounts by sign-in name" and roster order
    -- do not depend on the server's locale, and lower() folds ASCII only, as SQLite's does.
    email         TEXT    COLLATE "C" NOT NULL UNIQUE CHECK (email = lower(email)),
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
    list_version  BIGINT  NOT NULL DEFAULT 0 CHECK (list_version >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((md5_salt IS NULL) = (md5_hash IS NULL))
);

-- User-defined contact groups. Group 0 ("Other Contacts") is implicit and never stored.
-- Not called "groups": GROUPS is an SQL keyword (window frames) in SQLite and Postgres.
CREATE TABLE list_groups (
    owner  BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The legacy numeric id (MSNP7-9); small (one more than the highest in use).
    number INTEGER NOT NULL CHECK (number > 0),
    -- The id MSNP10+ clients use.
    guid   UUID    NOT NULL,
    name   TEXT    NOT NULL,
    PRIMARY KEY (owner, number),
    UNIQUE (owner, name),
    UNIQUE (owner, guid)
);

-- One row per (owner, contact) pair that appears on any of the owner's lists.
--
-- `lists` is the LST bit mask: FL=1, AL=2, BL=4, RL=8, PL=16. RL on owner's row about X is
-- written by X's edits (X added owner to FL), all other bits by owner's own edits. Every
-- transaction that writes rows of an owner first locks that owner's users row (see
-- crates/store/src/postgres.rs), so neither overwrites the other. A row whose mask would
-- become 0 is deleted instead, hence the CHECK.
CREATE TABLE contacts (
    owner    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    contact  BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The contact id MSNP10+ clients use.
    guid     UUID    NOT NULL,
    lists    INTEGER NOT NULL CHECK (lists BETWEEN 1 AND 31),
    -- SBP MFN: the owner's own name for the contact.
    nickname TEXT,
    PRIMARY KEY (owner, contact),
    UNIQUE (owner, guid)
);

-- Reverse lookups: "who has me on a list" (peer views, RL) and the cascade when an
-- account is deleted (Postgres does not index referencing columns by itself).
CREATE INDEX contacts_by_contact ON contacts (contact, owner);

-- Group membership of FL contacts.
CREATE TABLE contact_groups (
    owner   BIGINT  NOT NULL,
    contact BIGINT  NOT NULL,
    number  INTEGER NOT NULL,
    PRIMARY KEY (owner, contact, number),
    FOREIGN KEY (owner, contact) REFERENCES contacts (owner, contact) ON DELETE CASCADE,
    FOREIGN KEY (owner, number) REFERENCES list_groups (owner, number) ON DELETE CASCADE
);

-- Serves the cascade from list_groups (the primary key covers the one from contacts).
CREATE INDEX contact_groups_by_group ON contact_groups (owner, number);

-- PRP phone numbers and flags (PHH, PHW, PHM, MOB, MBE, WWE). An empty value is stored
-- as no row. COLLATE "C": listed in bytewise key order, as in SQLite.
CREATE TABLE properties (
    owner BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key   TEXT   COLLATE "C" NOT NULL,
    value TEXT   NOT NULL CHECK (value <> ''),
    PRIMARY KEY (owner, key)
);
