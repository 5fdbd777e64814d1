-- 0002: state the nodes of a cluster share besides the spool (issue 16): per-app rate-limit
-- buckets, failed-AUTH attempts, and the node registry.

-- One token bucket per limited key (`app:NAME`): its level after the last take, whether that
-- take was granted, and when it happened (the database's clock). A bucket untouched for an
-- hour is full again and is pruned.
CREATE TABLE herald_rate_buckets (
    key         text PRIMARY KEY,
    tokens      double precision NOT NULL,
    granted     boolean NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- AUTH verifications: 'p' reserved (in flight), 'f' failed, 's' succeeded. Counted per
-- address and per user name over `[smtp] auth_failure_window` (+ `auth_block`); older rows
-- are pruned by the nodes' heartbeat.
CREATE TABLE herald_auth_attempts (
    id        bigserial PRIMARY KEY,
    ip        text NOT NULL,
    username  text NOT NULL,
    outcome   char(1) NOT NULL CHECK (outcome IN ('p', 'f', 's')),
    node      text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX herald_auth_attempts_ip ON herald_auth_attempts (ip, at);
CREATE INDEX herald_auth_attempts_user ON herald_auth_attempts (username, at);
CREATE INDEX herald_auth_attempts_at ON herald_auth_attempts (at);

-- Every node that ever started against this database, with its last heartbeat.
CREATE TABLE herald_nodes (
    node_id        text PRIMARY KEY,
    host           text NOT NULL,
    version        text NOT NULL,
    -- SHA-256 of the node's shared settings (see crate::cluster::nodes::config_digest).
    config_digest  text NOT NULL,
    started_at     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    -- SMTP connections open at the last heartbeat.
    connections    bigint NOT NULL DEFAULT 0
);

-- TLS-RPT (RFC 8460): each node adds its session counts here within seconds, merged per policy
-- domain and UTC day (crate::report::store::DayCounts as JSON).
CREATE TABLE herald_tlsrpt_counts (
    domain  text NOT NULL,
    day     text NOT NULL,
    counts  jsonb NOT NULL,
    PRIMARY KEY (domain, day)
);

-- Reports built from those counts, until every rua has received them
-- (crate::report::store::OutboxItem as JSON). The node sending one holds its row lock, so
-- each report is sent by exactly one node.
CREATE TABLE herald_tlsrpt_outbox (
    report_id   text PRIMARY KEY,
    domain      text NOT NULL,
    item        jsonb NOT NULL,
    created_at  bigint NOT NULL
);

-- DMARC and TLS-RPT reports *received* ([feedback], `herald dmarc`, /dmarc), shared by the
-- nodes (crate::store::pg::PgStore): the same tables as the embedded SQLite store.
CREATE TABLE herald_report_mails (
    id           bigserial PRIMARY KEY,
    received_at  bigint NOT NULL,
    origin       text NOT NULL,
    mail_from    text NOT NULL,
    rcpt         text NOT NULL,
    raw          bytea NOT NULL,
    node         text NOT NULL
);
CREATE TABLE herald_dmarc_reports (
    id           bigserial PRIMARY KEY,
    mail_id      bigint NOT NULL REFERENCES herald_report_mails(id),
    org          text NOT NULL,
    report_id    text NOT NULL,
    domain       text NOT NULL,
    begin_at     bigint NOT NULL,
    end_at       bigint NOT NULL,
    policy       text NOT NULL,
    received_at  bigint NOT NULL,
    UNIQUE (org, report_id)
);
CREATE INDEX herald_dmarc_reports_domain ON herald_dmarc_reports (domain, end_at);
CREATE TABLE herald_dmarc_rows (
    id            bigserial PRIMARY KEY,
    report        bigint NOT NULL REFERENCES herald_dmarc_reports(id),
    source_ip     text NOT NULL,
    count         bigint NOT NULL,
    disposition   text NOT NULL,
    dkim_aligned  boolean NOT NULL,
    spf_aligned   boolean NOT NULL,
    header_from   text NOT NULL,
    dkim_json     text NOT NULL,
    spf_json      text NOT NULL
);
CREATE INDEX herald_dmarc_rows_report ON herald_dmarc_rows (report);
CREATE TABLE herald_tls_reports (
    id           bigserial PRIMARY KEY,
    mail_id      bigint NOT NULL REFERENCES herald_report_mails(id),
    org          text NOT NULL,
    report_id    text NOT NULL,
    begin_at     bigint NOT NULL,
    end_at       bigint NOT NULL,
    json         text NOT NULL,
    UNIQUE (org, report_id)
);
CREATE TABLE herald_report_rejected (
    id       bigserial PRIMARY KEY,
    mail_id  bigint NOT NULL REFERENCES herald_report_mails(id),
    part     text NOT NULL,
    error    text NOT NULL
);
CREATE TABLE herald_report_counters (
    name   text PRIMARY KEY,
    value  bigint NOT NULL
);
