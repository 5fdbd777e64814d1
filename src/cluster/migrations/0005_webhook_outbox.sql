-- The webhook outbox shared by the cluster's nodes (issue 25): each node moves the batches its
-- history writer made into this table, and any live node POSTs them, one app's batches in
-- order under a lease (`leased_by` until `leased_until`, unix milliseconds of the database's
-- clock), so the events of a node that died are sent by another. `webhook_id` stays the same
-- on every attempt, whichever node makes it.
CREATE TABLE herald_webhook_batches (
    id           bigserial PRIMARY KEY,
    webhook_id   text NOT NULL UNIQUE,
    app          text NOT NULL,
    node         text NOT NULL,
    body         bytea NOT NULL,
    events       integer NOT NULL,
    created      bigint NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt bigint NOT NULL,
    last_error   text,
    leased_by    text,
    leased_until bigint
);
CREATE INDEX herald_webhook_batches_app ON herald_webhook_batches (app, id);
