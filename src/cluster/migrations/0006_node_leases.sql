-- Leases per node (issue 29): a node renews one row, not every message it holds. A message
-- is the node's named in herald_messages.lease_owner for as long as that node's row here is
-- not expired; another node may adopt it once it is (or when lease_owner is NULL).
-- herald_messages.lease_until is no longer read.
CREATE TABLE herald_node_leases (
    node_id     text PRIMARY KEY,
    -- Until when the node's claim on its messages holds without renewal (the database's clock).
    lease_until timestamptz NOT NULL,
    -- Bumped by every operator action on one of the node's messages (hold, release, retry,
    -- delete), so the node reloads its list of messages at its next renewal.
    changes     bigint NOT NULL DEFAULT 0
);
-- Every owner named in herald_messages has a row (adoption looks owners up there).
INSERT INTO herald_node_leases (node_id, lease_until)
    SELECT lease_owner, coalesce(max(lease_until), '-infinity')
    FROM herald_messages WHERE lease_owner IS NOT NULL GROUP BY lease_owner;
-- Adoption finds unowned messages and those of expired nodes by owner: the index on
-- herald_messages (lease_owner) of migration 0001.
