//! Database URLs: parsed into a connection config, and shown to people without the password.

use tokio_postgres::config::{Config, Host};

/// `url` with any password removed: the `:password` of `user:password@` in a URL, and a
/// `password=` parameter (in a URL's query or a `key=value` connection string). What baton
/// prints or logs when it names the database.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let authority_end = authority_and_path
            .find('/')
            .unwrap_or(authority_and_path.len());
        let (authority, path) = authority_and_path.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                format!("{user}@{hosts}")
            }
            None => authority.to_owned(),
        };
        let mut out = format!("{scheme}://{authority}{path}");
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
        url.split_whitespace()
            .filter(|pair| !is_password_pair(pair))
            .collect::<Vec<_>>()
            .join(" ")
    }
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

/// Whether `store` (the `store` setting, `--store` or `BATON_STORE`) names PostgreSQL.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

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
