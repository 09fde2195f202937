-- API keys: only a keyed digest (HMAC-SHA-256 with the server secret) of each token is kept,
-- never the token. A key has a name, scopes, an optional expiry, and is revoked, never deleted,
-- so the audit log keeps naming it.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    -- The visible start of the token (`bwk_` and eight characters), for people to tell keys apart.
    prefix TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    -- Comma-separated: read, submit, operate, admin.
    scopes TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    last_used_at_ms BIGINT,
    revoked_at_ms BIGINT,
    -- The key this one replaced by rotation.
    rotated_from TEXT,
    -- Provider calls this key may start per UTC day; NULL takes the configured default.
    daily_provider_calls BIGINT
);

CREATE INDEX api_keys_created ON api_keys (created_at_ms DESC, id DESC);

-- Provider calls started per key and UTC day (`YYYY-MM-DD`), charged when a job or audit that
-- calls providers is accepted.
CREATE TABLE api_key_usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    provider_calls BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);

-- The server secret keyed digests are made with, when the configuration names none: generated
-- once by the first node, shared by every node of the database.
CREATE TABLE auth_secret (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    secret TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
