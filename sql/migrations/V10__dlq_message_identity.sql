-- A DLQ row's identity is its message's identity in JetStream, not its stream sequence
-- alone. Runs as ace_owner.
--
-- V1 made dlq_items.stream_seq UNIQUE so that a redelivered message never makes a second
-- row. But a deleted and recreated intake stream numbers its messages from 1 again: a new
-- rejection whose sequence an old row already held was acked `rejected` and written
-- nowhere (ON CONFLICT DO NOTHING took it for a redelivery). JetStream stamps every
-- message with the time it stored it; a redelivery carries the same (sequence, time), a
-- message of another stream incarnation the same sequence at another time. So the
-- identity is the pair.

-- JetStream's storage time of the message (its metadata's timestamp, kept to the
-- microsecond). NULL for the rows written before V10: their time is unknown.
ALTER TABLE dlq_items ADD COLUMN stored_at timestamptz;

-- Every row written from now on must say which message it is: a row without its time
-- would never conflict with its own redelivery. NOT VALID: the check holds for new rows
-- and is not run over the old ones (do not VALIDATE it; they are NULL by design).
ALTER TABLE dlq_items
    ADD CONSTRAINT dlq_items_stored_at_known CHECK (stored_at IS NOT NULL) NOT VALID;

-- The writer's `ON CONFLICT (stream_seq, stored_at) DO NOTHING` infers this index, so it
-- must stay a plain (non-partial) unique index on exactly these columns. NULLs are
-- distinct: the old rows (stream_seq unique among them, by V1) never conflict with each
-- other, nor with a new row, which always has its time. It also serves look-ups by
-- stream_seq alone, as the V1 constraint's index did.
CREATE UNIQUE INDEX dlq_items_message ON dlq_items (stream_seq, stored_at);

ALTER TABLE dlq_items DROP CONSTRAINT dlq_items_stream_seq_key;
