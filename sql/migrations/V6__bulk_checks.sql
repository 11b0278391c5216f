-- Intake speed (issue 8). Measured on 1,000-row batches: the regex CHECK on
-- ledger_entries.digest cost ~20 µs a row and the three row-by-row foreign keys another
-- ~20 µs, together most of the batch's insert time. The same rules stay enforced, more
-- cheaply: the digest check without a regex, and the references checked once per
-- statement over the inserted rows (transition tables) instead of once per row.

ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_digest_check,
    ADD CONSTRAINT ledger_entries_digest_check CHECK (
        length(digest) = 71
        AND starts_with(digest, 'sha256:')
        AND translate(substr(digest, 8), '0123456789abcdef', '') = ''
    ),
    DROP CONSTRAINT ledger_entries_block_height_fkey,
    DROP CONSTRAINT ledger_entries_producer_fkey;

ALTER TABLE ledger_subjects DROP CONSTRAINT ledger_subjects_idx_fkey;

-- Rows are never updated or deleted (the no_mutation triggers), so checking each insert
-- statement's rows is the whole of what the foreign keys did.
CREATE FUNCTION ace_check_entry_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.idx, n.block_height INTO bad FROM ace_new n
     WHERE NOT EXISTS (SELECT 1 FROM ledger_blocks b WHERE b.height = n.block_height)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger_entries idx %: block_height % is not in ledger_blocks', bad.idx, bad.block_height
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.idx, n.producer INTO bad FROM ace_new n
     WHERE NOT EXISTS (SELECT 1 FROM producers p WHERE p.producer = n.producer)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger_entries idx %: producer % is not in producers', bad.idx, bad.producer
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_refs AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS ace_new
    FOR EACH STATEMENT EXECUTE FUNCTION ace_check_entry_refs();

CREATE FUNCTION ace_check_subject_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT n.idx INTO bad FROM ace_new n
     WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.idx = n.idx)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger_subjects: idx % is not in ledger_entries', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_subjects_refs AFTER INSERT ON ledger_subjects
    REFERENCING NEW TABLE AS ace_new
    FOR EACH STATEMENT EXECUTE FUNCTION ace_check_subject_refs();
