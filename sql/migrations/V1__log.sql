-- The log: producers and their keys, entries, subjects, tiles, blocks, and the DLQ.
-- Runs as ace_owner. Hashes are raw bytes (bytea); the APIs render them as lowercase hex.

CREATE TABLE producers (
    producer    text PRIMARY KEY
                CHECK (producer ~ '^[a-z0-9][a-z0-9-]{0,62}$' OR producer = '_ledger'),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE producer_keys (
    keyid          text PRIMARY KEY CHECK (keyid ~ '^[0-9a-f]{64}$'),
    producer       text NOT NULL REFERENCES producers (producer),
    public_key     bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    valid_from     timestamptz NOT NULL DEFAULT now(),
    valid_until    timestamptz,
    revoked_at     timestamptz,
    revoke_reason  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE INDEX producer_keys_producer ON producer_keys (producer);

-- One row per sealed batch. Height 0 is genesis (tree size 0).
CREATE TABLE ledger_blocks (
    height           bigint PRIMARY KEY CHECK (height >= 0),
    first_index      bigint NOT NULL CHECK (first_index >= 0),
    tree_size        bigint NOT NULL UNIQUE CHECK (tree_size >= first_index),
    root_hash        bytea NOT NULL CHECK (length(root_hash) = 32),
    block_hash       bytea NOT NULL UNIQUE CHECK (length(block_hash) = 32),
    prev_block_hash  bytea NOT NULL CHECK (length(prev_block_hash) = 32),
    sealed_at        bigint NOT NULL,   -- unix ms, as in the block header
    checkpoint       text NOT NULL
);

CREATE TABLE ledger_entries (
    idx              bigint PRIMARY KEY CHECK (idx >= 0),
    digest           text NOT NULL UNIQUE CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    producer         text NOT NULL REFERENCES producers (producer),
    envelope         bytea NOT NULL,    -- verbatim, as received
    leaf             bytea NOT NULL,    -- the exact leaf record (RFC 8785 JSON)
    integrated_time  bigint NOT NULL,   -- unix ms, as in the leaf
    block_height     bigint NOT NULL REFERENCES ledger_blocks (height),
    payload_type     text NOT NULL,
    predicate_type   text,
    keyid            text NOT NULL,     -- the registered key whose signature admitted it
    stream_seq       bigint,            -- JetStream intake sequence (NULL for entries the ledger appends itself)
    warnings         jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX ledger_entries_producer ON ledger_entries (producer, idx);
CREATE INDEX ledger_entries_predicate_type ON ledger_entries (predicate_type, idx);

CREATE TABLE ledger_subjects (
    idx        bigint NOT NULL REFERENCES ledger_entries (idx),
    name       text NOT NULL,
    algorithm  text NOT NULL,
    value      text NOT NULL
);
CREATE INDEX ledger_subjects_digest ON ledger_subjects (algorithm, value, idx);
CREATE INDEX ledger_subjects_idx ON ledger_subjects (idx);

-- C2SP tlog-tiles, height 8. A partial tile is a prefix of every wider tile at the same
-- (level, idx), so rows are only ever added: a reader takes the narrowest row at least
-- as wide as it needs and truncates.
CREATE TABLE ledger_tiles (
    level   smallint NOT NULL CHECK (level >= 0),
    idx     bigint NOT NULL CHECK (idx >= 0),
    width   smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    hashes  bytea NOT NULL CHECK (length(hashes) = 32 * width),
    PRIMARY KEY (level, idx, width)
);

-- Rejected envelopes. Mutable on purpose (operators triage them); the raw bytes stay.
CREATE TABLE dlq_items (
    id           bigserial PRIMARY KEY,
    stream_seq   bigint NOT NULL UNIQUE,  -- a redelivered message never makes a second row
    subject      text NOT NULL,
    producer     text NOT NULL,          -- as named by the subject; may be unknown
    digest       text,                   -- NULL when the envelope could not be parsed
    code         text NOT NULL CHECK (code IN (
                   'malformed_envelope', 'too_large', 'unsupported_payload_type',
                   'malformed_statement', 'unknown_producer', 'unknown_key',
                   'wrong_producer_key', 'key_revoked', 'key_expired', 'bad_signature',
                   'policy_denied')),
    detail       text NOT NULL,
    field        text,
    envelope     bytea NOT NULL,         -- verbatim, as received
    headers      jsonb NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'retried', 'discarded')),
    resolved_at  timestamptz,
    resolved_by  text
);
CREATE INDEX dlq_items_open ON dlq_items (status, id);
CREATE INDEX dlq_items_digest ON dlq_items (digest);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused on the log tables for every
-- role, the owner included. Only a superuser disabling the triggers can rewrite history,
-- and `acectl audit` is there to catch that.
CREATE FUNCTION ace_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ace ledger: % on % is forbidden: the log is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['ledger_entries', 'ledger_subjects', 'ledger_tiles', 'ledger_blocks'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation()', t || '_no_mutation', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation()', t || '_no_truncate', t);
  END LOOP;
END
$$;
