-- Key events: every change to a producer or a producer key becomes a row of key_events,
-- made by triggers on the registry itself, so that no path (acectl, SQL by hand, a test
-- fixture) can change the registry without a record. The writer appends each event to the
-- log as a `_ledger` entry signed by the ledger key (payload type
-- application/vnd.ace.key-event+json), before the first entry any new key signs;
-- key_event_entries says where. `acectl audit` rebuilds the registry from those entries
-- and checks every accepted entry against it (docs/security.md, "Key events").
--
-- Time: every change takes the keys lock (advisory, transaction-scoped, exclusive) and
-- is stamped with the database clock. The writer reads the registry under the same lock
-- (shared) together with the database clock, which becomes the integrated time of the
-- batch it decides; so a change either is in the registry snapshot that judged an entry,
-- or is stamped later than that entry's integrated time. Revocations and suspensions are
-- stamped at the next whole millisecond, resumptions at the last one: each rounding keeps
-- the writer's verdict and the auditor's recomputation in agreement.
-- Runs as ace_owner.

ALTER TABLE producers ADD COLUMN status_reason text;

CREATE TABLE key_events (
    id        bigint PRIMARY KEY CHECK (id > 0),
    kind      text NOT NULL CHECK (kind IN ('producer_added', 'producer_suspended', 'producer_resumed',
                                            'key_added', 'key_validity_changed', 'key_revoked')),
    producer  text NOT NULL,
    keyid     text CHECK (keyid ~ '^[0-9a-f]{64}$'),
    at_ms     bigint NOT NULL,   -- unix ms, database clock
    actor     text NOT NULL,
    -- Kind-specific fields, as they go into the event's payload (docs/security.md).
    detail    jsonb NOT NULL DEFAULT '{}',
    CHECK ((keyid IS NULL) = (kind LIKE 'producer_%'))
);

-- Where each event sits in the log. Events are appended in id order, so the pending ones
-- are those above max(event_id).
CREATE TABLE key_event_entries (
    event_id  bigint PRIMARY KEY REFERENCES key_events (id),
    idx       bigint NOT NULL UNIQUE REFERENCES ledger_entries (idx)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['key_events', 'key_event_entries'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation()', t || '_no_mutation', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation()', t || '_no_truncate', t);
  END LOOP;
END
$$;

-- The keys lock: (0x41434531 'ACE1', 1) in the two-integer advisory key space, which
-- never collides with the writer's one-bigint leader lock.
CREATE FUNCTION ace_keys_lock() RETURNS void LANGUAGE sql AS
$$ SELECT pg_advisory_xact_lock(1094927665, 1) $$;

CREATE FUNCTION ace_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT floor(extract(epoch FROM t) * 1000)::bigint $$;

CREATE FUNCTION ace_key_event(p_kind text, p_producer text, p_keyid text, p_at bigint, p_detail jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO key_events (id, kind, producer, keyid, at_ms, actor, detail)
  VALUES ((SELECT coalesce(max(id), 0) + 1 FROM key_events), p_kind, p_producer, p_keyid, p_at,
          coalesce(nullif(current_setting('ace.actor', true), ''), session_user), p_detail);
END
$$;

CREATE FUNCTION ace_producers_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE now_ms bigint;
BEGIN
  IF NEW.producer = '_ledger' THEN
    RETURN NULL;
  END IF;
  PERFORM ace_keys_lock();
  now_ms := ace_ms(clock_timestamp());
  IF TG_OP = 'INSERT' THEN
    PERFORM ace_key_event('producer_added', NEW.producer, NULL, now_ms, '{}');
    IF NEW.status = 'suspended' THEN
      PERFORM ace_key_event('producer_suspended', NEW.producer, NULL, now_ms + 1,
                            jsonb_build_object('reason', coalesce(NEW.status_reason, '')));
    END IF;
  ELSIF NEW.status = 'suspended' AND OLD.status = 'active' THEN
    PERFORM ace_key_event('producer_suspended', NEW.producer, NULL, now_ms + 1,
                          jsonb_build_object('reason', coalesce(NEW.status_reason, '')));
  ELSIF NEW.status = 'active' AND OLD.status = 'suspended' THEN
    PERFORM ace_key_event('producer_resumed', NEW.producer, NULL, now_ms,
                          jsonb_build_object('reason', coalesce(NEW.status_reason, '')));
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION ace_producers_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.producer IS DISTINCT FROM OLD.producer OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
    RAISE EXCEPTION 'ace ledger: producer %: only status and status_reason may change', OLD.producer
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

CREATE FUNCTION ace_producer_keys_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE now_ms bigint;
BEGIN
  PERFORM ace_keys_lock();
  now_ms := ace_ms(clock_timestamp());
  IF TG_OP = 'INSERT' THEN
    PERFORM ace_key_event('key_added', NEW.producer, NEW.keyid, now_ms, jsonb_build_object(
      'public_key', encode(NEW.public_key, 'hex'),
      'valid_from', ace_ms(NEW.valid_from),
      'valid_until', ace_ms(NEW.valid_until)));
    IF NEW.revoked_at IS NOT NULL THEN
      PERFORM ace_key_event('key_revoked', NEW.producer, NEW.keyid, ace_ms(NEW.revoked_at),
                            jsonb_build_object('reason', NEW.revoke_reason));
    END IF;
    RETURN NULL;
  END IF;
  IF NEW.valid_until IS DISTINCT FROM OLD.valid_until THEN
    PERFORM ace_key_event('key_validity_changed', NEW.producer, NEW.keyid, now_ms,
                          jsonb_build_object('valid_until', ace_ms(NEW.valid_until)));
  END IF;
  IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
    PERFORM ace_key_event('key_revoked', NEW.producer, NEW.keyid, ace_ms(NEW.revoked_at),
                          jsonb_build_object('reason', NEW.revoke_reason));
  END IF;
  RETURN NULL;
END
$$;

-- What may change on a registered key, and when it takes effect: nothing retroactive.
CREATE FUNCTION ace_producer_keys_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE next_ms timestamptz;
BEGIN
  IF NEW.keyid IS DISTINCT FROM OLD.keyid OR NEW.producer IS DISTINCT FROM OLD.producer
     OR NEW.public_key IS DISTINCT FROM OLD.public_key OR NEW.valid_from IS DISTINCT FROM OLD.valid_from
     OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
    RAISE EXCEPTION 'ace ledger: key %: only valid_until and a revocation may change', OLD.keyid
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
                                     OR NEW.revoke_reason IS DISTINCT FROM OLD.revoke_reason) THEN
    RAISE EXCEPTION 'ace ledger: key % was revoked at %: a revocation is final', OLD.keyid, OLD.revoked_at
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM ace_keys_lock();
  next_ms := date_trunc('milliseconds', clock_timestamp()) + interval '1 millisecond';
  IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
    -- The database stamps the revocation: an entry is either judged with it or earlier.
    NEW.revoked_at := next_ms;
  END IF;
  IF NEW.valid_until IS DISTINCT FROM OLD.valid_until THEN
    IF OLD.valid_until IS NOT NULL AND OLD.valid_until < next_ms THEN
      RAISE EXCEPTION 'ace ledger: key % expired at %: its validity is history and cannot change', OLD.keyid, OLD.valid_until
        USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.valid_until IS NOT NULL AND NEW.valid_until < next_ms THEN
      -- Ending a key's validity takes effect now at the earliest, never in the past.
      NEW.valid_until := next_ms;
    END IF;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER producers_guard BEFORE UPDATE ON producers
    FOR EACH ROW EXECUTE FUNCTION ace_producers_guard();
CREATE TRIGGER producers_event AFTER INSERT OR UPDATE ON producers
    FOR EACH ROW EXECUTE FUNCTION ace_producers_event();
CREATE TRIGGER producer_keys_guard BEFORE UPDATE ON producer_keys
    FOR EACH ROW EXECUTE FUNCTION ace_producer_keys_guard();
CREATE TRIGGER producer_keys_event AFTER INSERT OR UPDATE ON producer_keys
    FOR EACH ROW EXECUTE FUNCTION ace_producer_keys_event();
-- Producers and keys are never deleted: their history is in the log.
CREATE TRIGGER producers_no_delete BEFORE DELETE ON producers
    FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation();
CREATE TRIGGER producer_keys_no_delete BEFORE DELETE ON producer_keys
    FOR EACH ROW EXECUTE FUNCTION ace_reject_mutation();
CREATE TRIGGER producers_no_truncate BEFORE TRUNCATE ON producers
    FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation();
CREATE TRIGGER producer_keys_no_truncate BEFORE TRUNCATE ON producer_keys
    FOR EACH STATEMENT EXECUTE FUNCTION ace_reject_mutation();

-- The ledger's own producer, for the entries it appends.
INSERT INTO producers (producer) VALUES ('_ledger') ON CONFLICT DO NOTHING;

-- A ledger made before key events: its registry as events marked backfilled, appended
-- at the writer's next batch. The auditor does not require a backfilled key's event to
-- precede that key's entries (they were written before events existed).
INSERT INTO key_events (id, kind, producer, keyid, at_ms, actor, detail)
SELECT row_number() OVER (ORDER BY ord, at, producer, keyid), kind, producer, keyid, at, 'migration V9', detail
FROM (
  SELECT 0 AS ord, 'producer_added' AS kind, producer, NULL::text AS keyid, ace_ms(created_at) AS at,
         '{"backfilled": true}'::jsonb AS detail
    FROM producers WHERE producer <> '_ledger'
  UNION ALL
  SELECT 1, 'key_added', producer, keyid, ace_ms(created_at),
         jsonb_build_object('public_key', encode(public_key, 'hex'), 'valid_from', ace_ms(valid_from),
                            'valid_until', ace_ms(valid_until), 'backfilled', true)
    FROM producer_keys
  UNION ALL
  SELECT 2, 'key_revoked', producer, keyid, ace_ms(revoked_at),
         jsonb_build_object('reason', revoke_reason, 'backfilled', true)
    FROM producer_keys WHERE revoked_at IS NOT NULL
  UNION ALL
  SELECT 3, 'producer_suspended', producer, NULL, ace_ms(now()),
         '{"reason": "", "backfilled": true}'::jsonb
    FROM producers WHERE status = 'suspended'
) AS registry;

REVOKE ALL ON key_events, key_event_entries FROM PUBLIC;
GRANT SELECT ON key_events TO ace_writer, ace_reader, ace_dashboard;
GRANT SELECT, INSERT ON key_event_entries TO ace_writer;
GRANT SELECT ON key_event_entries TO ace_reader, ace_dashboard;
