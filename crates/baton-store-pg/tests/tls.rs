//! TLS to PostgreSQL: a private cluster with `ssl=on` and a certificate signed by a CA made
//! at test time; `PgStore` connects with `sslmode=require` and `sslrootcert` (and really
//! over TLS), and refuses a server whose certificate a wrong root did not sign.

use std::path::Path;

use baton_protocol::ThreadId;
use baton_store::contract::meta;
use baton_store::{ListQuery, Store};
use baton_store_pg::PgStore;
use baton_test_support::PgCluster;

fn url_with(cluster: &PgCluster, query: &str) -> String {
    format!("{}?{query}", cluster.url())
}

/// Connections from other processes to `baton` that use TLS, as the server sees them.
fn tls_connections(cluster: &PgCluster) -> u64 {
    cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = 'baton'",
        )
        .parse()
        .expect("a count")
}

#[test]
fn sslmode_require_with_sslrootcert_connects_over_tls() {
    let Some(cluster) = PgCluster::start_with_tls_or_skip("sslmode_require_connects_over_tls")
    else {
        return;
    };
    let root = cluster.ca_cert().display().to_string();
    let url = url_with(&cluster, &format!("sslmode=require&sslrootcert={root}"));
    let store = PgStore::open(&url).expect("open over TLS");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    writer
        .append(&baton_protocol::RolloutItem::ResponseItem(
            baton_protocol::ResponseItem::user_message("over tls"),
        ))
        .expect("append");
    let listed = store.list(&ListQuery::default()).expect("list");
    assert_eq!(listed.threads.len(), 1);
    // The store's idle pooled connection is the server's TLS connection to `baton`.
    assert!(tls_connections(&cluster) >= 1, "no TLS connection to baton");

    // verify-ca and verify-full are taken too (the certificate names 127.0.0.1).
    for mode in ["verify-ca", "verify-full"] {
        let url = url_with(&cluster, &format!("sslmode={mode}&sslrootcert={root}"));
        let store = PgStore::open(&url).unwrap_or_else(|error| panic!("{mode}: {error}"));
        assert_eq!(
            store
                .list(&ListQuery::default())
                .expect("list")
                .threads
                .len(),
            1
        );
    }
}

#[test]
fn a_server_certificate_from_another_root_is_a_clear_error() {
    let Some(cluster) = PgCluster::start_with_tls_or_skip("wrong_root_is_refused") else {
        return;
    };
    let root = cluster.other_ca_cert().display().to_string();
    let url = url_with(&cluster, &format!("sslmode=require&sslrootcert={root}"));
    let error = match PgStore::open(&url) {
        Ok(_) => panic!("connected although the server's certificate is not from {root}"),
        Err(error) => error.to_string(),
    };
    eprintln!("a wrong root: {error}");
    assert!(error.contains("TLS"), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("trusted root"), "{error}");
    assert!(error.contains(&root), "names the root file: {error}");
    assert!(
        error.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{error}"
    );
    assert!(!error.contains(PgCluster::PASSWORD), "{error}");

    // Without sslrootcert the roots are the public ones, which did not sign it either.
    let url = url_with(&cluster, "sslmode=require");
    assert!(
        PgStore::open(&url).is_err(),
        "a test CA is not a public root"
    );

    // A root file that does not exist is named.
    let url = url_with(
        &cluster,
        "sslmode=require&sslrootcert=/nonexistent/root.crt",
    );
    let error = PgStore::open(&url).err().expect("refused").to_string();
    assert!(error.contains("/nonexistent/root.crt"), "{error}");
}

#[test]
fn sslmode_require_against_a_server_without_tls_is_refused() {
    let Some(cluster) = PgCluster::start_or_skip("require_without_server_tls") else {
        return;
    };
    let url = url_with(&cluster, "sslmode=require");
    let error = match PgStore::open(&url) {
        Ok(_) => panic!("connected in the clear although sslmode=require"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("TLS"), "{error}");
    // Without sslmode the same server is reached in the clear, as before.
    PgStore::open(&cluster.url()).expect("open without TLS");
}
