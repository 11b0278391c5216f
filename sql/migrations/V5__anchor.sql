-- The anchor service learns of each block the moment the writer's transaction commits
-- (NOTIFY is delivered at commit, never for a rolled-back batch), with polling as fallback.
-- The payload is the block height; listeners re-read the table, so a lost or coalesced
-- notification costs latency, never a block.
CREATE FUNCTION ace_notify_block() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ace_blocks', NEW.height::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_blocks_notify AFTER INSERT ON ledger_blocks
    FOR EACH ROW EXECUTE FUNCTION ace_notify_block();

-- anchor: reads blocks (checkpoints) and tiles (consistency proofs for witnesses), appends
-- receipts; nothing else.
GRANT SELECT ON ledger_blocks, ledger_tiles TO ace_anchor;
GRANT SELECT, INSERT ON anchor_receipts TO ace_anchor;
GRANT USAGE ON SEQUENCE anchor_receipts_id_seq TO ace_anchor;

-- Receipts per sink, newest first: where each sink's anchoring resumes after a restart.
CREATE INDEX anchor_receipts_sink ON anchor_receipts (sink, height DESC);
