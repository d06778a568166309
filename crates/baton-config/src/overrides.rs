//! `-c key=value` overrides: a dotted key path and a TOML value, as in Codex.

/// Parses `key=value`. The value is TOML (`true`, `42`, `"text"`, `["a"]`, `{ a = 1 }`); a value
/// that is not valid TOML is taken as a plain string, so `-c model=gpt-5` works unquoted.
pub fn parse_cli_override(text: &str) -> Result<(String, toml::Value), String> {
    let Some((key, raw_value)) = text.split_once('=') else {
        return Err(format!("`{text}` is not of the form key=value"));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
        return Err(format!("`{text}` has an empty key"));
    }
    let raw_value = raw_value.trim();
    let value = match toml::from_str::<toml::Table>(&format!("value = {raw_value}")) {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw_value.to_owned())),
        Err(_) => toml::Value::String(raw_value.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// Sets `dotted.key.path` in `table` to `value`, creating intermediate tables; a table value
/// is merged into an existing table rather than replacing it.
pub fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').map(str::trim).collect();
    let Some(last) = parts.pop() else {
        return Err("empty key".to_owned());
    };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(format!(
                    "`{part}` is not a table, so `{path}` cannot be set"
                ));
            }
        };
    }
    merge_value(current, last.to_owned(), value);
    Ok(())
}

/// Inserts `value` under `key`, merging tables key by key.
pub(crate) fn merge_value(table: &mut toml::Table, key: String, value: toml::Value) {
    match (table.get_mut(&key), value) {
        (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
            for (k, v) in incoming {
                merge_value(existing, k, v);
            }
        }
        (_, value) => {
            table.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_or_plain_strings() {
        assert_eq!(
            parse_cli_override("a.b=true").expect("bool"),
            ("a.b".into(), toml::Value::Boolean(true))
        );
        assert_eq!(
            parse_cli_override("model=gpt-5").expect("bare string"),
            ("model".into(), toml::Value::String("gpt-5".into()))
        );
        assert_eq!(
            parse_cli_override("model=\"x=y\"").expect("quoted"),
            ("model".into(), toml::Value::String("x=y".into()))
        );
        assert!(parse_cli_override("novalue").is_err());
        assert!(parse_cli_override("a..b=1").is_err());
    }

    #[test]
    fn set_path_merges_tables() {
        let mut table: toml::Table = toml::from_str("[p]\na = 1\nb = 2\n").expect("valid toml");
        set_path(&mut table, "p.b", toml::Value::Integer(3)).expect("set");
        set_path(&mut table, "q.r.s", toml::Value::Boolean(true)).expect("set nested");
        assert_eq!(table["p"]["a"].as_integer(), Some(1));
        assert_eq!(table["p"]["b"].as_integer(), Some(3));
        assert_eq!(table["q"]["r"]["s"].as_bool(), Some(true));
        assert!(set_path(&mut table, "p.a.x", toml::Value::Integer(1)).is_err());
    }
}
