-- AI-visibility audits: one row per audit, one per item (prompt x provider x sample), one per
-- mention found in an answer. An audit's id is the id of the `audit.run` job that runs it.
-- Times are Unix milliseconds.
CREATE TABLE audits (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'partial', 'failed')),
    request TEXT NOT NULL,
    summary TEXT,
    num_items INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT
);

-- Written once per item and overwritten whole when a re-run answers it again.
CREATE TABLE audit_items (
    audit_id TEXT NOT NULL REFERENCES audits (id) ON DELETE CASCADE,
    item_index INTEGER NOT NULL,
    prompt_index INTEGER NOT NULL,
    provider TEXT NOT NULL,
    sample INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('answered', 'failed')),
    answer TEXT,
    answered_by TEXT,
    model TEXT,
    latency_ms REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    brand_mentioned BOOLEAN NOT NULL DEFAULT FALSE,
    is_list BOOLEAN NOT NULL DEFAULT FALSE,
    first_mention_char INTEGER,
    first_mention_rank INTEGER,
    list_rank INTEGER,
    brand_sentiment REAL,
    error_code TEXT,
    error_message TEXT,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (audit_id, item_index)
);

CREATE TABLE audit_mentions (
    audit_id TEXT NOT NULL,
    item_index INTEGER NOT NULL,
    mention_index INTEGER NOT NULL,
    entity TEXT NOT NULL,
    is_brand BOOLEAN NOT NULL,
    matched_text TEXT NOT NULL,
    char_offset INTEGER NOT NULL,
    sentence_index INTEGER NOT NULL,
    list_rank INTEGER,
    sentence TEXT NOT NULL,
    sentiment REAL,
    sentiment_label TEXT,
    PRIMARY KEY (audit_id, item_index, mention_index),
    FOREIGN KEY (audit_id, item_index) REFERENCES audit_items (audit_id, item_index)
        ON DELETE CASCADE
);
