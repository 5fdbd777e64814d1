-- DMARC totals kept when a report is stored (crate::store::pg_totals), so `herald dmarc
-- summary` and /dmarc read O(days x sources), not every row: messages per (domain, report end,
-- day the report begins, verified, source, DKIM/SPF verdict, disposition), the unverified
-- reports of a domain collapsed to source 0.0.0.0; and per source, its reporters and DKIM
-- signatures (verified reports only) with where each was first seen and the latest report end.
CREATE TABLE herald_dmarc_totals (
    domain        text NOT NULL,
    end_at        bigint NOT NULL,
    day           bigint NOT NULL,
    verified      boolean NOT NULL,
    source_ip     text NOT NULL,
    dkim_aligned  boolean NOT NULL,
    spf_aligned   boolean NOT NULL,
    disposition   text NOT NULL,
    count         bigint NOT NULL,
    rows          bigint NOT NULL,
    PRIMARY KEY (domain, end_at, day, verified, source_ip, dkim_aligned, spf_aligned,
                 disposition)
);
CREATE INDEX herald_dmarc_totals_end ON herald_dmarc_totals (end_at);
CREATE TABLE herald_dmarc_source_orgs (
    domain       text NOT NULL,
    source_ip    text NOT NULL,
    org          text NOT NULL,
    first_begin  bigint NOT NULL,
    first_row    bigint NOT NULL,
    last_end     bigint NOT NULL,
    PRIMARY KEY (domain, source_ip, org)
);
CREATE TABLE herald_dmarc_source_dkim (
    domain       text NOT NULL,
    source_ip    text NOT NULL,
    signature    text NOT NULL,
    first_begin  bigint NOT NULL,
    first_row    bigint NOT NULL,
    first_pos    bigint NOT NULL,
    last_end     bigint NOT NULL,
    PRIMARY KEY (domain, source_ip, signature)
);

-- Reports stored before this migration: counted once, here.
INSERT INTO herald_dmarc_totals (domain, end_at, day, verified, source_ip, dkim_aligned,
                                 spf_aligned, disposition, count, rows)
SELECT r.domain, r.end_at,
       CASE WHEN r.verified THEN r.begin_at - ((r.begin_at % 86400) + 86400) % 86400 ELSE 0 END,
       r.verified,
       CASE WHEN r.verified THEN w.source_ip ELSE '0.0.0.0' END,
       r.verified AND w.dkim_aligned, r.verified AND w.spf_aligned,
       CASE WHEN r.verified AND w.disposition IN ('quarantine', 'reject')
            THEN w.disposition ELSE '' END,
       SUM(GREATEST(w.count, 0))::bigint, COUNT(*)
FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

INSERT INTO herald_dmarc_source_orgs (domain, source_ip, org, first_begin, first_row, last_end)
SELECT domain, source_ip, org, begin_at, id, last_end FROM (
  SELECT r.domain, w.source_ip, r.org, r.begin_at, w.id,
         MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, r.org) AS last_end,
         ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, r.org
                            ORDER BY r.begin_at, w.id) AS n
  FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id
  WHERE r.verified
) t WHERE n = 1;

INSERT INTO herald_dmarc_source_dkim (domain, source_ip, signature, first_begin, first_row,
                                      first_pos, last_end)
SELECT domain, source_ip, sig, begin_at, id, k, last_end FROM (
  SELECT r.domain, w.source_ip, e.sig::text AS sig, r.begin_at, w.id, e.k,
         MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, e.sig) AS last_end,
         ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, e.sig
                            ORDER BY r.begin_at, w.id, e.k) AS n
  FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id
  CROSS JOIN LATERAL jsonb_array_elements(
      CASE WHEN jsonb_typeof(w.dkim_json::jsonb) = 'array'
           THEN w.dkim_json::jsonb ELSE '[]'::jsonb END)
    WITH ORDINALITY AS e(sig, k)
  WHERE r.verified
) t WHERE n = 1;
