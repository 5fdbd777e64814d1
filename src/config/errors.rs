//! The `config` crate's errors, rephrased for an operator: the dotted key first, then the
//! problem with an example of a right value (a duration, an address, the words an enum takes),
//! and for an unknown key the nearest known one. Which file or variable to blame is decided by
//! the caller ([`super::Config::load`]).

use serde::Deserialize;

use super::ConfigError;

/// A `config` crate error as a [`ConfigError`] against `file`.
pub(super) fn from_config_error(file: &str, e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let (problem, for_key) = split_key(&text);
    let (key, problem) = if let Some(field) = between(problem, "unknown field `", "`") {
        let key = match &for_key {
            Some(parent) => format!("{parent}.{field}"),
            None => field.to_string(),
        };
        let known: Vec<&str> = problem
            .split_once("expected one of ")
            .or_else(|| problem.split_once("expected "))
            .map(|(_, list)| list.split(", ").map(|k| k.trim_matches('`')).collect())
            .unwrap_or_default();
        (key, unknown_key(field, &known))
    } else if let Some(missing) = between(problem, "missing configuration field \"", "\"") {
        (
            missing.to_string(),
            "is required here but missing; add it to the file".to_string(),
        )
    } else {
        let key = for_key.unwrap_or_else(|| "(file)".into());
        (key, with_example(problem))
    };
    ConfigError {
        file: file.to_string(),
        key,
        problem,
    }
}

/// The text without its trailing "for key `a.b`" / "in FILE", and the key (with the dot the
/// crate leaves out after an index: `dkim.keys[0]algorithm` → `dkim.keys[0].algorithm`).
fn split_key(text: &str) -> (&str, Option<String>) {
    let Some(at) = text.find(" for key `") else {
        return (text, None);
    };
    let key = between(&text[at..], "`", "`").map(|k| {
        let mut out = String::with_capacity(k.len() + 2);
        let mut after_index = false;
        for c in k.chars() {
            if after_index && c != '.' && c != '[' {
                out.push('.');
            }
            after_index = c == ']';
            out.push(c);
        }
        out
    });
    (&text[..at], key.filter(|k| !k.contains(' ')))
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// "unknown setting; did you mean …" for `field`, given the keys allowed there.
fn unknown_key(field: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (strsim_distance(field, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    match nearest {
        Some((_, k)) => format!("unknown setting {field:?}; did you mean {k:?}?"),
        None if known.is_empty() => format!("unknown setting {field:?}"),
        None => format!(
            "unknown setting {field:?}; the settings here are {}",
            known.join(", ")
        ),
    }
}

/// Edit distance (insertions, deletions, substitutions) between two short names.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The problem with an example of a right value appended, where the kind of value is known.
fn with_example(problem: &str) -> String {
    if let Some(rest) = problem.strip_prefix("enum ")
        && let Some((name, value)) = rest.split_once(" does not have variant constructor ")
    {
        return match enum_words(name) {
            Some(words) => format!(
                "{value:?} is not one of {}",
                words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("{value:?} is not an accepted value"),
        };
    }
    let hint = if problem.contains("expected a duration") {
        "a duration is a quoted string with a unit, e.g. \"30s\", \"5m\", \"2h\" or \"7days\""
    } else if problem.contains("socket address") {
        "an address and port, e.g. \"0.0.0.0:587\" or \"[::]:587\""
    } else if problem.contains("expected a boolean") {
        "true or false, without quotes"
    } else if problem.contains("expected an integer")
        || problem.contains("expected u")
        || problem.contains("expected i")
    {
        "a whole number without quotes, e.g. 100"
    } else if problem.contains("expected a string") {
        "a quoted string, e.g. \"relay.example.net\""
    } else if problem.contains("expected a sequence") || problem.contains("expected an array") {
        "a list, e.g. [\"a\", \"b\"] (from the environment: \"a,b\")"
    } else {
        return problem.to_string();
    };
    format!("{problem}; {hint}")
}

/// The words a configuration enum accepts, by its Rust name (as the crate's error names it).
fn enum_words(name: &str) -> Option<&'static [&'static str]> {
    use super::*;
    let all: [(&str, &'static [&'static str]); 7] = [
        ("LogFormat", variants::<LogFormat>()),
        ("DkimAlgorithm", variants::<DkimAlgorithm>()),
        ("RuleClass", variants::<RuleClass>()),
        ("SuppressionScope", variants::<SuppressionScope>()),
        ("ClusterTls", variants::<ClusterTls>()),
        ("HostedStsMode", variants::<HostedStsMode>()),
        ("UnsubscribeMode", variants::<UnsubscribeMode>()),
    ];
    all.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The serialized variant names of a derived enum, read from its `Deserialize` impl (so they
/// never drift from what the file accepts).
fn variants<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(VariantProbe) {
        Err(Found(v)) => v,
        Ok(_) => &[],
    }
}

/// A deserializer that only records the variant names it is asked for.
struct VariantProbe;

/// The "error" carrying the variant names out of [`VariantProbe`].
#[derive(Debug)]
struct Found(&'static [&'static str]);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "variants {:?}", self.0)
    }
}

impl std::error::Error for Found {}

impl serde::de::Error for Found {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Found(&[])
    }
}

impl<'de> serde::Deserializer<'de> for VariantProbe {
    type Error = Found;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Found> {
        Err(Found(variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words_come_from_the_types() {
        assert_eq!(enum_words("LogFormat"), Some(&["text", "json"][..]));
        assert_eq!(
            enum_words("UnsubscribeMode"),
            Some(&["off", "one-click"][..])
        );
        assert_eq!(
            with_example("enum LogFormat does not have variant constructor jsonl"),
            "\"jsonl\" is not one of \"text\", \"json\""
        );
    }

    #[test]
    fn keys_get_their_dot_after_an_index_and_unknown_keys_a_suggestion() {
        let (problem, key) = split_key("bad for key `dkim.keys[0]algorithm` in x.toml");
        assert_eq!(problem, "bad");
        assert_eq!(key.as_deref(), Some("dkim.keys[0].algorithm"));
        assert_eq!(
            unknown_key("hostnam", &["hostname", "data_dir"]),
            "unknown setting \"hostnam\"; did you mean \"hostname\"?"
        );
        assert!(unknown_key("zzzzzz", &["hostname"]).contains("the settings here are hostname"));
    }
}
