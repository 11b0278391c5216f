-- Admission policy: the version (SHA-256 of the policy file) that admitted each entry, and
-- the text of every version that admitted any, so that an auditor can read what a
-- version said. Entries written before V4 have no version (NULL).
ALTER TABLE ledger_entries ADD COLUMN policy_version text;

CREATE TABLE ledger_policies (
    version        text PRIMARY KEY CHECK (version ~ '^sha256:[0-9a-f]{64}$'),
    source         text NOT NULL,
    first_used_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER ledger_policies_no_mutation BEFORE UPDATE OR DELETE ON ledger_policies
    FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation();
CREATE TRIGGER ledger_policies_no_truncate BEFORE TRUNCATE ON ledger_policies
    FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation();

REVOKE ALL ON ledger_policies FROM PUBLIC;
GRANT SELECT, INSERT ON ledger_policies TO ace_writer;
GRANT SELECT ON ledger_policies TO ace_reader;
