//! The MTA-STS policy file (RFC 8461 §3.2): `key: value` lines, CRLF or LF, parsed here because
//! mail-auth only parses the TXT record. Anything invalid is an error the caller reports as
//! `sts-policy-invalid`, never a crash.

use crate::tls_policy::{Mode, Policy};

/// The largest `max_age` RFC 8461 allows (about one year).
pub const MAX_MAX_AGE: u64 = 31_557_600;

/// Why a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A required field is missing.
    #[error("the policy has no {0:?} field")]
    Missing(&'static str),
    /// A field has a value outside its grammar.
    #[error("{field}: {value:?} is not valid: {why}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What the grammar wants.
        why: &'static str,
    },
    /// A line that is not `key: value`.
    #[error("line {0} is not a `key: value` pair")]
    Syntax(usize),
}

/// Parses a policy file body; `id` is the TXT record id it was fetched for.
pub fn parse(body: &str, id: &str) -> Result<Policy, PolicyError> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (n, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(PolicyError::Syntax(n + 1));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(PolicyError::Syntax(n + 1));
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        // Only the first occurrence of a single-valued field counts; unknown keys are ignored.
        match key {
            "version" if version.is_none() => version = Some(value.to_string()),
            "mode" if mode.is_none() => mode = Some(parse_mode(value)?),
            "max_age" if max_age.is_none() => max_age = Some(parse_max_age(value)?),
            "mx" => mx.push(parse_mx(value)?),
            _ => {}
        }
    }
    match version.as_deref() {
        Some("STSv1") => {}
        Some(other) => {
            return Err(PolicyError::Invalid {
                field: "version",
                value: other.to_string(),
                why: "must be STSv1",
            });
        }
        None => return Err(PolicyError::Missing("version")),
    }
    let mode = mode.ok_or(PolicyError::Missing("mode"))?;
    let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::Missing("mx"));
    }
    Ok(Policy {
        id: id.to_string(),
        mode,
        mx,
        max_age,
    })
}

/// The policy as the lines of its file, for TLS-RPT's `policy-string` and `herald sts show`.
pub fn to_lines(policy: &Policy) -> Vec<String> {
    let mut lines = vec![
        "version: STSv1".to_string(),
        format!("mode: {}", mode_name(policy.mode)),
    ];
    lines.extend(policy.mx.iter().map(|m| format!("mx: {m}")));
    lines.push(format!("max_age: {}", policy.max_age));
    lines
}

/// The mode as written in policy files.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    }
}

fn parse_mode(value: &str) -> Result<Mode, PolicyError> {
    match value {
        "enforce" => Ok(Mode::Enforce),
        "testing" => Ok(Mode::Testing),
        "none" => Ok(Mode::None),
        _ => Err(PolicyError::Invalid {
            field: "mode",
            value: value.to_string(),
            why: "must be enforce, testing or none",
        }),
    }
}

fn parse_max_age(value: &str) -> Result<u64, PolicyError> {
    let invalid = |why| PolicyError::Invalid {
        field: "max_age",
        value: value.to_string(),
        why,
    };
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("must be 1 to 10 digits"));
    }
    let n: u64 = value.parse().map_err(|_| invalid("must be a number"))?;
    if n > MAX_MAX_AGE {
        return Err(invalid("must be at most 31557600"));
    }
    Ok(n)
}

fn parse_mx(value: &str) -> Result<String, PolicyError> {
    let invalid = PolicyError::Invalid {
        field: "mx",
        value: value.to_string(),
        why: "must be a host name, optionally starting with \"*.\"",
    };
    let name = value.strip_prefix("*.").unwrap_or(value);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Err(invalid);
    }
    Ok(value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enforce_with_crlf() {
        let body = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.backup.example.test\r\nmax_age: 86400\r\n";
        let p = parse(body, "abc").expect("valid");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mx1.example.test", "*.backup.example.test"]);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.id, "abc");
    }

    #[test]
    fn parses_lf_unknown_keys_and_no_final_newline() {
        let body = "version: STSv1\nmode:testing\nfoo: bar\nmx:  MX.Example.Test\nmax_age: 0";
        let p = parse(body, "1").expect("valid");
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.mx, vec!["mx.example.test"]);
        assert_eq!(p.max_age, 0);
    }

    #[test]
    fn none_mode_needs_no_mx() {
        let p = parse("version: STSv1\nmode: none\nmax_age: 60\n", "1").expect("valid");
        assert_eq!(p.mode, Mode::None);
    }

    #[test]
    fn rejects_invalid_policies() {
        let cases = [
            ("mode: enforce\nmx: a.test\nmax_age: 1\n", "version"),
            (
                "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
                "STSv1",
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
                "mode",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "mx"),
            ("version: STSv1\nmode: enforce\nmx: a.test\n", "max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n",
                "31557600",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -5\n",
                "digits",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 5\n",
                "host name",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 5\n",
                "host name",
            ),
            ("<html>not a policy</html>\n", "line 1"),
        ];
        for (body, needle) in cases {
            let err = parse(body, "1").expect_err(body).to_string();
            assert!(err.contains(needle), "{body:?}: {err}");
        }
    }

    #[test]
    fn max_age_upper_bound_is_accepted() {
        let p = parse(
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557600\n",
            "1",
        )
        .expect("valid");
        assert_eq!(p.max_age, MAX_MAX_AGE);
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let p = parse(
            "version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 60\n",
            "1",
        )
        .expect("valid");
        assert!(p.matches_mx("mx1.example.test"));
        assert!(p.matches_mx("MX1.Example.Test."));
        assert!(!p.matches_mx("a.b.example.test"));
        assert!(!p.matches_mx("example.test"));
        assert!(!p.matches_mx("mx1.example.test.evil"));
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        let p = parse(
            "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 60\n",
            "1",
        )
        .expect("valid");
        assert!(p.matches_mx("mx.example.test"));
        assert!(!p.matches_mx("mx2.example.test"));
        assert!(!p.matches_mx("a.mx.example.test"));
    }

    #[test]
    fn lines_round_trip() {
        let body = "version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 60\n";
        let p = parse(body, "1").expect("valid");
        assert_eq!(parse(&to_lines(&p).join("\r\n"), "1"), Ok(p));
    }
}
