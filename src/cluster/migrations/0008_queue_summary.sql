-- 0008: `herald queue summary` counted by the database (issue 29). What the summary counts is
-- kept in columns PostgreSQL computes itself on every insert and update (generated columns:
-- no writer can forget them), and one index holds them all, so the summary is an index-only
-- scan over small entries, not a read of every message's envelope, state and body.
-- Written so that running it again changes nothing (IF NOT EXISTS / OR REPLACE).

-- The domain of each recipient still waiting (lower case; '' for an address without '@'):
-- every envelope recipient before the first attempt is recorded (state NULL), then each
-- recipient whose status is pending.
CREATE OR REPLACE FUNCTION herald_waiting_domains(envelope jsonb, state jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(lower(substring(a FROM '@([^@]*)$')), '')), '{}')
    FROM (
        SELECT jsonb_array_elements_text(envelope -> 'recipients') AS a WHERE state IS NULL
        UNION ALL
        SELECT r ->> 'address' FROM jsonb_array_elements(state -> 'recipients') r
        WHERE r ->> 'status' = 'pending'
    ) waiting
$$;

ALTER TABLE herald_messages
    -- The submitting app ('-' for none).
    ADD COLUMN IF NOT EXISTS app text GENERATED ALWAYS AS (coalesce(envelope ->> 'app', '-')) STORED,
    -- When the message was accepted (seconds since the epoch).
    ADD COLUMN IF NOT EXISTS received_at bigint
        GENERATED ALWAYS AS ((envelope ->> 'received_at')::bigint) STORED,
    -- One entry per waiting recipient: its domain.
    ADD COLUMN IF NOT EXISTS waiting_domains text[]
        GENERATED ALWAYS AS (herald_waiting_domains(envelope, state)) STORED;

-- Everything the summary reads, so that it reads only this index.
CREATE INDEX IF NOT EXISTS herald_messages_summary ON herald_messages (app, received_at)
    INCLUDE (held, next_attempt, size, waiting_domains);

-- A starting node reads its own messages a chunk at a time in id order
-- (WHERE lease_owner = $1 AND id > $2 ORDER BY id LIMIT $3); the same index serves every
-- look-up by owner the index on lease_owner alone served.
CREATE INDEX IF NOT EXISTS herald_messages_owner_id ON herald_messages (lease_owner, id);
DROP INDEX IF EXISTS herald_messages_lease_owner;
