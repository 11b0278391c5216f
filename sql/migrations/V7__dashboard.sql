-- The dashboard: DLQ triage as append-only actions, and the operators' hash-chained audit.
-- Runs as ace_owner.
--
-- Nothing an operator does deletes or rewrites anything: a retry or a discard is a new
-- row in dlq_actions, and every operator action is a new row in operator_audit whose
-- hash covers the one before (acectl audit verifies the chain). The DLQ itself becomes
-- append-only too: an item's status is its latest action (none: open), and
-- dlq_items.status keeps its V1 default 'open' forever.

CREATE TABLE dlq_actions (
    id          bigserial PRIMARY KEY,
    dlq_id      bigint NOT NULL REFERENCES dlq_items (id),
    action      text NOT NULL CHECK (action IN ('retry', 'discard')),
    note        text CHECK (note IS NULL OR length(note) <= 2000),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    -- The re-submission of a retry: its Nats-Msg-Id and its intake stream sequence.
    msg_id      text,
    stream_seq  bigint,
    -- The operator_audit row that records the action (one row for a bulk retry).
    audit_seq   bigint NOT NULL,
    CHECK (action <> 'discard' OR (note IS NOT NULL AND length(btrim(note)) > 0)),
    CHECK (action <> 'retry' OR (msg_id IS NOT NULL AND stream_seq IS NOT NULL))
);
CREATE INDEX dlq_actions_item ON dlq_actions (dlq_id, id);

-- JetStream's delivery count of the rejected message (NULL for rows written before V7).
ALTER TABLE dlq_items ADD COLUMN delivered bigint;

-- The explorer filters by producer, reason code and time, newest first, by keyset on id.
CREATE INDEX dlq_items_producer ON dlq_items (producer, id);
CREATE INDEX dlq_items_code ON dlq_items (code, id);
CREATE INDEX dlq_items_received ON dlq_items (received_at, id);

-- hash = SHA-256 of the RFC 8785 JSON of {"action","actor","at","detail","prev_hash"
-- (hex),"role","seq","target"}, `detail` parsed from its text (core::operator_audit).
-- The first row's prev_hash is 32 zero bytes.
CREATE TABLE operator_audit (
    seq        bigint PRIMARY KEY CHECK (seq >= 1),
    at         bigint NOT NULL,                -- unix ms
    actor      text NOT NULL,
    role       text NOT NULL CHECK (role IN ('viewer', 'operator')),
    action     text NOT NULL,
    target     text NOT NULL,
    detail     text NOT NULL,                  -- JSON text, as hashed
    prev_hash  bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash       bytea NOT NULL UNIQUE CHECK (length(hash) = 32)
);

-- The chain cannot fork or skip: a row must follow the latest one and name its hash.
-- (The hash itself is recomputed by acectl audit; SQL has no RFC 8785.)
CREATE FUNCTION ace_check_operator_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE prev bytea;
BEGIN
  IF NEW.seq = 1 THEN
    prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
  ELSE
    SELECT hash INTO prev FROM operator_audit WHERE seq = NEW.seq - 1;
    IF prev IS NULL THEN
      RAISE EXCEPTION 'ace ledger: operator_audit row % does not follow row %', NEW.seq, NEW.seq - 1
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
  END IF;
  IF NEW.prev_hash <> prev THEN
    RAISE EXCEPTION 'ace ledger: operator_audit row % names prev_hash % but row % has hash %',
      NEW.seq, encode(NEW.prev_hash, 'hex'), NEW.seq - 1, encode(prev, 'hex')
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER operator_audit_chain BEFORE INSERT ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION ace_check_operator_audit();

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['dlq_items', 'dlq_actions', 'operator_audit'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation()', t || '_no_mutation', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation()', t || '_no_truncate', t);
  END LOOP;
END
$$;

REVOKE ALL ON dlq_actions, operator_audit FROM PUBLIC;

-- dashboard: reads what it shows; inserts only actions and audit rows.
GRANT SELECT ON producers, producer_keys, ledger_entries, ledger_subjects, ledger_blocks,
    dlq_items, anchor_receipts, ledger_policies, dlq_actions, operator_audit TO ace_dashboard;
GRANT INSERT ON dlq_actions, operator_audit TO ace_dashboard;
GRANT USAGE ON SEQUENCE dlq_actions_id_seq TO ace_dashboard;

-- The reader and auditors may read the triage record and the chain.
GRANT SELECT ON dlq_actions, operator_audit TO ace_reader;
