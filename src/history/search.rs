//! A search of the history: every criterion optional, each one a bound parameter of one
//! `SELECT` (never spliced into the SQL text), newest first, with a limit.

use rusqlite::types::Value;
use serde::Deserialize;

use crate::events::EventKind;

/// The columns [`super::db::row_event`] reads, after `id`.
const COLUMNS: &str = "id, time, kind, node, app, queue_id, message_id, sender, recipient, \
                       remote, tls, tls_policy, reply, attempt, class";

/// Most events one search returns.
pub const MAX_LIMIT: usize = 10_000;

/// What to look for. Empty strings count as absent (a web form sends them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Query {
    /// The recipient address (exact, case-insensitive).
    pub recipient: Option<String>,
    /// The envelope sender (exact, case-insensitive).
    pub sender: Option<String>,
    /// The app.
    pub app: Option<String>,
    /// The `Message-ID` (with or without angle brackets).
    pub message_id: Option<String>,
    /// herald's queue id.
    pub queue_id: Option<String>,
    /// The kind of event (`delivered`, `bounced`, …).
    pub status: Option<String>,
    /// From this time (unix seconds).
    pub since: Option<u64>,
    /// Up to this time (unix seconds).
    pub until: Option<u64>,
    /// At most this many events (default 100).
    pub limit: Option<usize>,
}

/// A search that cannot run as asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Query {
    /// Checks the status name; call before [`Query::sql`].
    pub fn check(&self) -> Result<(), BadQuery> {
        if let Some(s) = given(&self.status)
            && EventKind::parse(s).is_none()
        {
            let names: Vec<&str> = crate::events::ALL_KINDS
                .iter()
                .map(|k| k.as_str())
                .collect();
            return Err(BadQuery(format!(
                "unknown status {s:?}; one of: {}",
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, MAX_LIMIT)
    }

    /// The SQL and its bound values.
    pub fn sql(&self) -> (String, Vec<Value>) {
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        let mut text = |sql: &mut String, column: &str, v: Option<&str>| {
            if let Some(v) = v {
                values.push(Value::Text(v.to_string()));
                sql.push_str(&format!(" AND {column} = ?{}", values.len()));
            }
        };
        text(&mut sql, "recipient", given(&self.recipient));
        text(&mut sql, "sender", given(&self.sender));
        text(&mut sql, "app", given(&self.app));
        text(
            &mut sql,
            "message_id",
            given(&self.message_id).map(|m| m.trim_start_matches('<').trim_end_matches('>')),
        );
        text(&mut sql, "queue_id", given(&self.queue_id));
        text(&mut sql, "kind", given(&self.status));
        if let Some(since) = self.since {
            values.push(Value::Integer(since.min(i64::MAX as u64) as i64));
            sql.push_str(&format!(" AND time >= ?{}", values.len()));
        }
        if let Some(until) = self.until {
            values.push(Value::Integer(until.min(i64::MAX as u64) as i64));
            sql.push_str(&format!(" AND time <= ?{}", values.len()));
        }
        values.push(Value::Integer(self.limit() as i64));
        sql.push_str(&format!(
            " ORDER BY time DESC, id DESC LIMIT ?{}",
            values.len()
        ));
        (sql, values)
    }
}

/// A value bound to the PostgreSQL form of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgValue {
    /// A text parameter.
    Text(String),
    /// A bigint parameter.
    Int(i64),
}

impl Query {
    /// The PostgreSQL form of [`Query::sql`] (`$n` parameters, addresses compared lower-cased).
    pub fn pg_sql(&self) -> (String, Vec<PgValue>) {
        let (sqlite, values) = self.sql();
        let mut sql = sqlite
            .replace(" FROM events ", " FROM herald_events ")
            .replace("recipient = ?", "lower(recipient) = lower(?")
            .replace("sender = ?", "lower(sender) = lower(?");
        // Close the lower( … ) opened above, then number the parameters the PostgreSQL way.
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql.as_str();
        while let Some(i) = rest.find("lower(?") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 7..];
            let digits = after.chars().take_while(|c| c.is_ascii_digit()).count();
            out.push_str(&format!("lower(?{})", &after[..digits]));
            rest = &after[digits..];
        }
        out.push_str(rest);
        sql = out.replace('?', "$");
        let values = values
            .into_iter()
            .map(|v| match v {
                Value::Integer(i) => PgValue::Int(i),
                Value::Text(t) => PgValue::Text(t),
                _ => PgValue::Text(String::new()),
            })
            .collect();
        (sql, values)
    }
}

/// A search as a form or query string sends it: every field text, times as unix seconds,
/// RFC 3339, or an age (`2h` = two hours ago).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Form {
    /// See [`Query::recipient`].
    pub recipient: String,
    /// See [`Query::sender`].
    pub sender: String,
    /// See [`Query::app`].
    pub app: String,
    /// See [`Query::message_id`].
    pub message_id: String,
    /// See [`Query::queue_id`].
    pub queue_id: String,
    /// See [`Query::status`].
    pub status: String,
    /// From this time.
    pub since: String,
    /// Up to this time.
    pub until: String,
    /// At most this many events.
    pub limit: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Form {
    /// The query, or what is wrong with the form.
    pub fn query(&self, now: u64) -> Result<Query, BadQuery> {
        let time = |name: &str, v: &str| -> Result<Option<u64>, BadQuery> {
            match opt(v) {
                None => Ok(None),
                Some(v) => parse_time(&v, now).map(Some).ok_or_else(|| {
                    BadQuery(format!(
                        "{name} {v:?} is not a time: give unix seconds, RFC 3339                          (2026-12-07T10:00:00Z) or an age such as 2h or 3days"
                    ))
                }),
            }
        };
        let limit = match opt(&self.limit) {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| BadQuery(format!("limit {l:?} is not a number")))?,
            ),
        };
        let q = Query {
            recipient: opt(&self.recipient),
            sender: opt(&self.sender),
            app: opt(&self.app),
            message_id: opt(&self.message_id),
            queue_id: opt(&self.queue_id),
            status: opt(&self.status),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            limit,
        };
        q.check()?;
        Ok(q)
    }
}

/// A time as unix seconds, RFC 3339, or an age before `now` (`90s`, `2h`, `3days`).
pub fn parse_time(s: &str, now: u64) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp()).ok();
    }
    humantime::parse_duration(s)
        .ok()
        .map(|d| now.saturating_sub(d.as_secs()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_seconds_dates_or_ages() {
        assert_eq!(parse_time("1700000000", 0), Some(1_700_000_000));
        assert_eq!(parse_time("1970-01-01T00:01:00Z", 0), Some(60));
        assert_eq!(parse_time("2h", 10_000), Some(10_000 - 7200));
        assert_eq!(parse_time("soon", 0), None);
        let f = Form {
            since: "yesterday-ish".into(),
            ..Form::default()
        };
        assert!(f.query(0).unwrap_err().to_string().contains("since"));
    }

    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let q = Query {
            recipient: Some("x' OR '1'='1".into()),
            status: Some("delivered".into()),
            since: Some(10),
            ..Query::default()
        };
        let (sql, values) = q.sql();
        assert!(!sql.contains("OR '1'"), "{sql}");
        assert!(
            sql.contains("recipient = ?1") && sql.contains("kind = ?2"),
            "{sql}"
        );
        assert_eq!(values.len(), 4);
        assert_eq!(values[0], Value::Text("x' OR '1'='1".into()));
    }

    #[test]
    fn the_postgres_form_numbers_dollars_and_lowers_addresses() {
        let q = Query {
            recipient: Some("Bob@x".into()),
            app: Some("shop".into()),
            ..Query::default()
        };
        let (sql, values) = q.pg_sql();
        assert!(sql.contains("FROM herald_events"), "{sql}");
        assert!(sql.contains("lower(recipient) = lower($1)"), "{sql}");
        assert!(
            sql.contains("app = $2") && sql.contains("LIMIT $3"),
            "{sql}"
        );
        assert_eq!(values[0], PgValue::Text("Bob@x".into()));
        assert!(!sql.contains('?'));
    }

    #[test]
    fn unknown_status_is_refused_with_the_names() {
        let q = Query {
            status: Some("gone".into()),
            ..Query::default()
        };
        let e = q.check().unwrap_err().to_string();
        assert!(e.contains("delivered") && e.contains("gone"), "{e}");
    }
}
