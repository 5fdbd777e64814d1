-- Traffic shaping shared by the nodes (issue 29): one row per destination that pushed back
-- (`421 4.7.28` and the like), so every node holds it back and halves its limits. Before this
-- migration herald created the table on first use: IF NOT EXISTS adopts such a table as it is.
CREATE TABLE IF NOT EXISTS herald_shaping (
    -- A shaping rule's name or an MX host's parent domain.
    destination text PRIMARY KEY,
    -- Held back until then (the database's clock).
    held_until  timestamptz NOT NULL,
    -- The reply that caused the latest push-back.
    reason      text NOT NULL,
    -- Grows with every push-back recorded for the destination (nodes apply each once).
    seq         bigint NOT NULL,
    -- The node that recorded the latest.
    node        text NOT NULL
);
