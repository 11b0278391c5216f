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
      -- Roles are cluster-wide but the migration lock is per database: two databases
      -- migrated at once (parallel tests, a fresh cluster) may both get here.
      BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
      END;
    END IF;
  END LOOP;
END
$$;
