-- Cluster-wide roles of ACE Ledger. Idempotent; run by `acectl db migrate` (as a
-- superuser or a role with CREATEROLE) before the ordered migrations, which then run
-- as ace_owner so that ace_owner owns every object.
--
-- Roles are created LOGIN without a password: local trust/peer auth in development.
-- Production sets passwords or certificates (docs/operator.md, "Postgres roles").
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['ace_owner', 'ace_writer', 'ace_reader', 'ace_anchor', 'ace_dashboard'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', r);
    END IF;
  END LOOP;
END
$$;
