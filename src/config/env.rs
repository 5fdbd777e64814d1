//! `HERALD__SECTION__KEY` overrides: which variables exist, which keys hold lists (a
//! comma-separated value, spaces around commas ignored), and which variable a bad key came from,
//! so an error caused by the environment names the variable rather than the file.

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;

/// The prefix of every override, followed by the section and key joined with `__`.
pub const PREFIX: &str = "HERALD__";

/// Keys whose environment value is a comma-separated list. `apps.<name>.senders` is added for
/// each app named in the environment.
const LIST_KEYS: &[&str] = &[
    "dns.servers",
    "delivery.retry_schedule",
    "delivery.require_tls_domains",
    "tls.extra_roots",
    "smtp.plain_networks",
    "smtp.plain_senders",
    "spf.addresses",
];

/// The overrides in the environment: dotted lowercase key → (variable name, value).
pub fn overrides() -> Vec<(String, String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter_map(|(name, value)| {
            let ours = name.get(..PREFIX.len())?.eq_ignore_ascii_case(PREFIX);
            ours.then(|| {
                let key = name[PREFIX.len()..].to_lowercase().replace("__", ".");
                (key, name.clone(), value)
            })
        })
        .collect()
}

/// The dotted keys that hold lists, for the overrides present.
pub fn list_keys(overrides: &[(String, String, String)]) -> Vec<String> {
    let mut keys: Vec<String> = LIST_KEYS.iter().map(|k| k.to_string()).collect();
    for (key, _, _) in overrides {
        let parts: Vec<&str> = key.split('.').collect();
        if let ["apps", _, "senders"] = parts.as_slice() {
            keys.push(key.clone());
        }
    }
    keys
}

/// The overrides as the `config` crate's environment source expects them (variable → value),
/// with spaces around the commas of list values removed.
pub fn source_map(
    overrides: &[(String, String, String)],
    lists: &[String],
) -> HashMap<String, String> {
    overrides
        .iter()
        .map(|(key, name, value)| {
            let value = if lists.contains(key) {
                value
                    .split(',')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect()
}

/// The variable that set `key` (or the section or list holding it, or a key below it), if
/// one did.
pub fn variable_for(overrides: &[(String, String, String)], key: &str) -> Option<String> {
    // `apps.demo.senders[1]` and `dkim.keys[0].file` come from `apps.demo.senders` / nothing.
    let key = key.split('[').next().unwrap_or(key).to_lowercase();
    let exact = overrides
        .iter()
        .find(|(k, _, _)| *k == key || key.starts_with(&format!("{k}.")));
    // An unknown section (`servr`) is reported without the key below it.
    let below = || {
        overrides
            .iter()
            .find(|(k, _, _)| k.starts_with(&format!("{key}.")))
    };
    exact.or_else(below).map(|(_, name, _)| name.clone())
}

/// `e` blamed on the environment variable that caused it, if one did; an unknown setting
/// also gets the variable it was probably meant to be.
pub fn blame(overrides: &[(String, String, String)], e: ConfigError) -> ConfigError {
    let Some(var) = variable_for(overrides, &e.key) else {
        return e;
    };
    let mut problem = e.problem;
    let unknown = problem
        .strip_prefix("unknown setting \"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(field, _)| field.to_string());
    if let Some(field) = unknown {
        let meant = problem
            .split_once("did you mean \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(m, _)| m.to_ascii_uppercase());
        problem = match meant {
            Some(meant) => {
                let fixed: Vec<String> = var
                    .split("__")
                    .map(|part| {
                        if part.eq_ignore_ascii_case(&field) {
                            meant.clone()
                        } else {
                            part.to_string()
                        }
                    })
                    .collect();
                format!(
                    "herald has no setting {:?} (from {var}); did you mean {}?",
                    e.key,
                    fixed.join("__")
                )
            }
            None => format!("{var}: {problem}"),
        };
    }
    ConfigError {
        file: format!("environment variable {var}"),
        problem,
        ..e
    }
}

/// An override of `apps.NAME.KEY` for an app the file does not define (an override changes an
/// app, it does not create one, unless it also gives `password_hash` and `senders`).
pub fn app_without_file_block(
    overrides: &[(String, String, String)],
    path: &Path,
    file: &str,
) -> Option<ConfigError> {
    let doc: toml_edit::DocumentMut = std::fs::read_to_string(path).ok()?.parse().ok()?;
    let defined: Vec<String> = doc
        .get("apps")
        .and_then(|a| a.as_table_like())
        .map(|t| t.iter().map(|(k, _)| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    for (key, var, _) in overrides {
        let parts: Vec<&str> = key.split('.').collect();
        let ["apps", app, _] = parts.as_slice() else {
            continue;
        };
        if defined.iter().any(|d| d == app) {
            continue;
        }
        let given = |k: &str| {
            overrides
                .iter()
                .any(|(o, _, _)| *o == format!("apps.{app}.{k}"))
        };
        if given("password_hash") && given("senders") {
            continue;
        }
        let list = if defined.is_empty() {
            "it defines none".to_string()
        } else {
            format!("it defines {}", defined.join(", "))
        };
        return Some(ConfigError {
            file: format!("environment variable {var}"),
            key: format!("apps.{app}"),
            problem: format!(
                "there is no app {app:?} in {file} to override ({list}); add it to the file \
                 first (`herald app add {app} --sender …` prints the block), or correct the \
                 name in the variable"
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &str, name: &str, value: &str) -> (String, String, String) {
        (key.into(), name.into(), value.into())
    }

    #[test]
    fn lists_are_trimmed_and_apps_senders_are_lists() {
        let env = vec![
            o(
                "smtp.plain_senders",
                "HERALD__SMTP__PLAIN_SENDERS",
                "a@x.test, @y.test",
            ),
            o(
                "apps.billing.senders",
                "HERALD__APPS__BILLING__SENDERS",
                "b@x.test ,c@x.test",
            ),
            o(
                "report.organization",
                "HERALD__REPORT__ORGANIZATION",
                "Example, Inc.",
            ),
        ];
        let lists = list_keys(&env);
        let map = source_map(&env, &lists);
        assert_eq!(map["HERALD__SMTP__PLAIN_SENDERS"], "a@x.test,@y.test");
        assert_eq!(map["HERALD__APPS__BILLING__SENDERS"], "b@x.test,c@x.test");
        assert_eq!(map["HERALD__REPORT__ORGANIZATION"], "Example, Inc.");
        assert_eq!(
            variable_for(&env, "apps.billing.senders[1]").as_deref(),
            Some("HERALD__APPS__BILLING__SENDERS")
        );
        assert_eq!(variable_for(&env, "smtp.max_recipients"), None);
    }
}
