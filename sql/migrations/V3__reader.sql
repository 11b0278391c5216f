-- What the reader needs: receipts to show with each block, and an index for the one
-- search filter pair the V1 indexes do not serve.

-- Evidence that a block's checkpoint reached an external trust anchor. Written by the
-- anchor service; a receipt for block H also covers every earlier block, by consistency.
CREATE TABLE anchor_receipts (
    id          bigserial PRIMARY KEY,
    height      bigint NOT NULL REFERENCES ledger_blocks (height),
    tree_size   bigint NOT NULL CHECK (tree_size >= 0),
    sink        text NOT NULL,     -- the configured sink's name
    kind        text NOT NULL CHECK (kind IN ('nats', 'rfc3161', 'webhook', 'witness')),
    receipt     jsonb NOT NULL,    -- kind-specific evidence (token, cosignature, response)
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX anchor_receipts_height ON anchor_receipts (height, id);

CREATE TRIGGER anchor_receipts_no_mutation BEFORE UPDATE OR DELETE ON anchor_receipts
    FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation();
CREATE TRIGGER anchor_receipts_no_truncate BEFORE TRUNCATE ON anchor_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation();

-- Search by producer and predicate type together, in index order.
CREATE INDEX ledger_entries_producer_predicate ON ledger_entries (producer, predicate_type, idx);

REVOKE ALL ON anchor_receipts FROM PUBLIC;
GRANT SELECT ON anchor_receipts TO ace_reader;
