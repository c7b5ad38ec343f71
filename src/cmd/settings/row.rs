//! The shape of one settings-table row: its kind, default, rule and accessors,
//! and how a row is named as a flag and an environment variable. No rows here
//! (table.rs has them), no I/O.

use super::args::ServeArgs;

/// The TOML type of a setting's value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Path,
    Integer,
    Bool,
    /// A list of small integers, CPU or shard numbers (`--cpus 2,3`,
    /// `cpus = [2, 3]`).
    IntList,
}

/// A setting's value when nothing sets it.
#[derive(Copy, Clone, Debug)]
pub enum DefaultValue {
    Text(&'static str),
    Integer(u64),
    Bool(bool),
    /// No value; the text says what that means.
    Unset(&'static str),
}

/// What values a setting accepts, checked by [`ServeArgs::validate`] for every
/// row alike.
#[derive(Copy, Clone, Debug)]
pub enum Rule {
    /// Any value of the kind.
    Any,
    /// An integer in `min..=max`.
    Between(u64, u64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A rule relating several settings, checked by hand in
    /// [`ServeArgs::validate`] or `EngineConfig::validate`; the text documents it.
    Relation(&'static str),
}

/// How the table reads and writes a setting's field.
pub struct Access {
    /// The value as TOML; `None` when unset.
    pub get: fn(&ServeArgs) -> Option<toml::Value>,
    /// Set the value from the config file (or a deprecated name).
    pub set: fn(&mut ServeArgs, &toml::Value) -> Result<(), String>,
}

/// One row of the settings table.
pub struct Setting {
    /// The config file key, and the source of the flag (`--` + dashes) and the
    /// environment variable (`COREKV_` + upper case). A value with a unit ends
    /// in it: `_bytes`, `_ms`, `_us`.
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    /// One line for --help and docs/settings.md.
    pub doc: &'static str,
    pub rule: Rule,
    /// Former names (file keys; their flags and variables follow the same
    /// rule), accepted for one release with a warning naming the new one.
    pub deprecated: &'static [&'static str],
    pub access: Access,
}

impl Setting {
    pub fn flag(&self) -> String {
        flag_of(self.name)
    }
    pub fn env_var(&self) -> String {
        env_of(self.name)
    }
}

pub fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

pub fn env_of(key: &str) -> String {
    format!("COREKV_{}", key.to_uppercase())
}

impl DefaultValue {
    /// What leaving the setting unset means.
    pub fn unset_meaning(&self) -> &'static str {
        match self {
            DefaultValue::Unset(meaning) => meaning,
            _ => "no value",
        }
    }

    /// The default as clap shows it (`None`: no default).
    pub fn clap_text(&self) -> Option<String> {
        match self {
            DefaultValue::Text(t) => Some(t.to_string()),
            DefaultValue::Integer(n) => Some(n.to_string()),
            DefaultValue::Bool(b) => Some(b.to_string()),
            DefaultValue::Unset(_) => None,
        }
    }
}

impl Rule {
    /// The rule as docs/settings.md states it.
    pub fn describe(&self) -> String {
        match self {
            Rule::Any => "any".to_string(),
            Rule::Between(min, u64::MAX) => format!("at least {min}"),
            Rule::Between(min, max) => format!("{min} to {max}"),
            Rule::OneOf(choices) => choices.join(" or "),
            Rule::Relation(text) => text.to_string(),
        }
    }

    /// The problem with `value` of setting `name`, if any.
    pub(super) fn check(&self, name: &str, value: &toml::Value) -> Option<String> {
        match (self, value) {
            (Rule::Between(min, max), toml::Value::Integer(i)) => {
                let n = u64::try_from(*i).unwrap_or(0);
                (n < *min || n > *max).then(|| match *max {
                    u64::MAX => format!("{name} = {n}: must be at least {min}"),
                    _ => format!("{name} = {n}: must be between {min} and {max}"),
                })
            }
            (Rule::OneOf(choices), toml::Value::String(s)) => (!choices.contains(&s.as_str()))
                .then(|| format!("{name} = {s:?}: must be {}", choices.join(" or "))),
            _ => None,
        }
    }
}
