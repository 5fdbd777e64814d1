-- DMARC reports whose mail was authenticated for the reporting organization's domain (only
-- these move a verdict); reports stored before the check count as unverified.
ALTER TABLE herald_dmarc_reports ADD COLUMN verified boolean NOT NULL DEFAULT false;
