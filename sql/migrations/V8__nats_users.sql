-- NATS users (NKeys) of the ledger's producers and services: only public keys are kept;
-- seeds are written once, to 0600 files, by `acectl nats user add`. `acectl nats render`
-- turns this table (and the producers' status) into nats-server's authorization block.
-- Runs as ace_owner.

CREATE TABLE nats_users (
    name        text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('producer', 'writer', 'anchor', 'dashboard', 'admin')),
    public_key  text NOT NULL UNIQUE CHECK (public_key ~ '^U[A-Z2-7]{55}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A producer's NATS user is the producer's own.
    CHECK (kind <> 'producer' OR name ~ '^[a-z0-9][a-z0-9-]{0,62}$')
);

REVOKE ALL ON nats_users FROM PUBLIC;
