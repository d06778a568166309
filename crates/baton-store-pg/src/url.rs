//! Database URLs: parsed into a connection config, and shown to people without the password.

use tokio_postgres::config::{Config, Host};

/// `url` with any password removed: the `:password` of `user:password@` in a URL, and a
/// `password=` parameter (in a URL's query or a `key=value` connection string). What baton
/// prints or logs when it names the database.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user info ends at the last `@`: a password typed without percent-encoding may
        // hold `/`, `?`, `#` or `@`, and must not be taken for the path or the query. An `@`
        // in the query only hides more than needed.
        let (user, rest) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user_end = userinfo
                    .find([':', '/', '?', '#'])
                    .unwrap_or(userinfo.len());
                (format!("{}@", &userinfo[..user_end]), hosts)
            }
            None => (String::new(), rest),
        };
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let mut out = format!("{scheme}://{user}{authority_and_path}");
        if let Some(query) = query {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !is_password_pair(pair))
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        out
    } else {
        key_value_pairs(url)
            .into_iter()
            .filter(|pair| !is_password_pair(pair))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The passwords a `postgres://` URL holds as written (in its user info, or as `password=` in
/// its query): what must not stay readable in a command line. An `@` in the query makes more
/// than the password count as one, which only hides more.
pub fn passwords_in_url(url: &str) -> Vec<&str> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        found.push(password);
    }
    if let Some((_, query)) = rest.split_once('?') {
        found.extend(
            query
                .split('&')
                .filter(|pair| is_password_pair(pair))
                .filter_map(|pair| pair.split_once('=').map(|(_, value)| value))
                .filter(|value| !value.is_empty()),
        );
    }
    found
}

/// The `key=value` pairs of a libpq connection string. libpq allows spaces around `=` and a
/// value in single quotes may hold spaces (and `\'`), so a password is always one pair, never
/// split into pieces that would be shown.
fn key_value_pairs(text: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let mut start = None;
    let mut quoted = false;
    let mut escaped = false;
    let mut seen_equals = false;
    let mut in_value = false;
    for (index, c) in text.char_indices() {
        if start.is_none() {
            if c.is_whitespace() {
                continue;
            }
            (start, seen_equals, in_value) = (Some(index), false, false);
        }
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '\'' => {
                quoted = !quoted;
                in_value |= seen_equals;
            }
            '=' if !seen_equals && !quoted => seen_equals = true,
            c if c.is_whitespace() && !quoted => {
                let equals_next = text[index..].trim_start().starts_with('=');
                let spaces_around_equals =
                    (!seen_equals && equals_next) || (seen_equals && !in_value);
                if !spaces_around_equals && let Some(from) = start.take() {
                    pairs.push(&text[from..index]);
                }
            }
            _ => in_value |= seen_equals,
        }
    }
    if let Some(from) = start {
        pairs.push(&text[from..]);
    }
    pairs
}

fn is_password_pair(pair: &str) -> bool {
    pair.split_once('=')
        .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case("password"))
}

/// Where a config points, as `postgres://user@host:port/db`: built from the parsed config, so
/// it cannot carry the password.
pub fn location_of(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    format!(
        "postgres://{user}{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passwords_a_url_holds_are_found_as_written() {
        assert_eq!(
            passwords_in_url("postgres://baton:hunter2@db:5433/baton?sslmode=require"),
            ["hunter2"]
        );
        assert_eq!(
            passwords_in_url("postgresql://u:p%40ss@h/db?password=other&x=1"),
            ["p%40ss", "other"]
        );
        assert!(passwords_in_url("postgres://baton@db/baton").is_empty());
        assert!(passwords_in_url("postgres://baton:@db/baton").is_empty());
        assert!(passwords_in_url("files").is_empty());
    }

    #[test]
    fn passwords_are_removed_from_urls_and_connection_strings() {
        assert_eq!(
            redact_url("postgres://baton:hunter2@db.example:5433/baton?sslmode=require"),
            "postgres://baton@db.example:5433/baton?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://baton:p%40ss@h1:5432,h2:5432/db"),
            "postgresql://baton@h1:5432,h2:5432/db"
        );
        assert_eq!(
            redact_url("postgres://baton@h/db?password=hunter2&application_name=x"),
            "postgres://baton@h/db?application_name=x"
        );
        assert_eq!(redact_url("postgres://h/db?Password=x"), "postgres://h/db");
        assert_eq!(
            redact_url("host=h user=u password=hunter2 dbname=d"),
            "host=h user=u dbname=d"
        );
        assert_eq!(redact_url("postgres://h:5432/db"), "postgres://h:5432/db");
    }

    /// A password typed without percent-encoding, in a URL that does not parse (the port is
    /// out of range), is the case where only this function stands between it and the screen.
    #[test]
    fn unencoded_and_quoted_passwords_are_removed_whole() {
        for (url, shown) in [
            (
                "postgres://baton:pa/ss@h:99999/db",
                "postgres://baton@h:99999/db",
            ),
            (
                "postgres://baton:pa?ss@h:99999/db?sslmode=disable",
                "postgres://baton@h:99999/db?sslmode=disable",
            ),
            ("postgres://baton:pa#ss@h/db", "postgres://baton@h/db"),
            ("postgres://baton:pa@ss@h/db", "postgres://baton@h/db"),
            (
                "postgres://h/db?password=pa@ss",
                // An `@` in the query hides more than the password, never less.
                "postgres://h@ss",
            ),
            ("host=h password='pa ss' dbname=d", "host=h dbname=d"),
            ("host=h password='pa\\' ss' dbname=d", "host=h dbname=d"),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(
                !redacted.contains("pa") && !redacted.contains("ss'"),
                "{url}"
            );
        }
    }

    #[test]
    fn a_location_names_user_host_port_and_database_only() {
        let config: Config = "postgres://baton:hunter2@db.example:5433/shared"
            .parse()
            .expect("parse");
        let location = location_of(&config);
        assert_eq!(location, "postgres://baton@db.example:5433/shared");
        assert!(!location.contains("hunter2"));
    }
}

/// The password libpq would take from a password file (`PGPASSFILE`, else `~/.pgpass`) for
/// `host`, `port`, `database` and `user`: the first matching `host:port:db:user:password` line
/// (`*` matches anything, `\:` and `\\` are escapes). Like libpq, a file others can read is
/// ignored.
pub fn pgpass_password(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let metadata = std::fs::metadata(&path).ok()?;
    if std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o077 != 0 {
        tracing::warn!(
            "ignoring {}: it is readable by others (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    pgpass_lookup(&text, host, port, database, user)
}

fn pgpass_lookup(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            let matches = |field: &str, value: &str| field == "*" || field == value;
            (matches(h, host) && matches(p, &port) && matches(d, database) && matches(u, user))
                .then(|| password.clone())
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(field) = fields.last_mut()
                {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod pgpass_tests {
    use super::pgpass_lookup;

    #[test]
    fn the_first_matching_pgpass_line_gives_the_password() {
        let text = "# comment\nother:5432:*:*:nope\ndb.example:5433:baton:baton:p\\:w\nx:*:*:*:later\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "db.example", 5433, "baton", "baton").as_deref(),
            Some("p:w")
        );
        assert_eq!(
            pgpass_lookup(text, "db.example", 5432, "baton", "baton").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("h:1:d:u:x\n", "h", 2, "d", "u"), None);
    }
}
