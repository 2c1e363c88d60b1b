-- Butterfly schema, version 4 (Postgres): the roaming profile of the WLM storage service —
-- the personal message and the display picture (butterfly_core::profile). One row per
-- account that has stored either; none means an empty profile.
CREATE TABLE profiles (
    owner           BIGINT NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    psm             TEXT   NOT NULL DEFAULT '',
    -- ms since the Unix epoch; 0 when never set.
    psm_changed_at  BIGINT NOT NULL DEFAULT 0 CHECK (psm_changed_at >= 0),
    -- The picture and its type, both or neither.
    tile_mime       TEXT,
    tile            BYTEA CHECK (tile IS NULL OR length(tile) <= 262144),
    tile_changed_at BIGINT NOT NULL DEFAULT 0 CHECK (tile_changed_at >= 0),
    CHECK ((tile IS NULL) = (tile_mime IS NULL))
);
