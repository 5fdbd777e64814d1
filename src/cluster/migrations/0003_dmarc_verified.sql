-- DMARC reports whose mail was authenticated for the reporting organization's domain (only
-- these move a verdict); reports stored before the check count as unverified.
ALTER TABLE herald_dmarc_reports ADD COLUMN verified boolean NOT NULL DEFAULT false;
-- The per-sender daily bound counts a client address's rows (feedback.max_rows_per_sender_per_day).
CREATE INDEX herald_report_mails_origin ON herald_report_mails (origin, received_at);
CREATE INDEX herald_dmarc_reports_mail ON herald_dmarc_reports (mail_id);
