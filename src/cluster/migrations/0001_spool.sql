-- 0001: the spool shared by the nodes of a cluster (issue 16).
--
-- One row per queued message: envelope and bytes (herald's headers + the message as received,
-- exactly as delivered), the delivery state, the operator's hold, and the lease of the node
-- delivering it. A row exists from the commit before `250` until every recipient is delivered
-- or failed.
CREATE TABLE herald_messages (
    -- 20 hex digits, sorting by arrival (crate::spool::new_queue_id).
    id            text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{1,40}$'),
    -- crate::spool::Envelope as JSON.
    envelope      jsonb NOT NULL,
    -- The message as it will be delivered. bytea: at most 1 GB per value; TOAST stores it
    -- out of line (and compressed where that pays).
    body          bytea NOT NULL,
    size          bigint NOT NULL,
    -- crate::spool::DeliveryState as JSON; NULL until the first attempt is recorded.
    state         jsonb,
    -- The operator's hold (authoritative; the `held` inside `state` is ignored).
    held          boolean NOT NULL DEFAULT false,
    -- When the earliest pending recipient is due (seconds since the epoch); NULL when
    -- nothing is pending.
    next_attempt  bigint,
    -- The node that accepted the message.
    accepted_by   text NOT NULL,
    -- The node delivering it, and until when its claim holds without renewal. Another node
    -- may adopt the message once lease_until has passed.
    lease_owner   text,
    lease_until   timestamptz,
    -- Bumped by every operator action (hold, release, retry), so the owning node reloads.
    control_seq   bigint NOT NULL DEFAULT 0,
    accepted_at   timestamptz NOT NULL DEFAULT now()
);

-- Adoption looks for expired leases; renewal for one node's leases.
CREATE INDEX herald_messages_lease_until ON herald_messages (lease_until);
CREATE INDEX herald_messages_lease_owner ON herald_messages (lease_owner);
