//! The schema, as numbered SQL files in `migrations/` (append-only: a change is a new
//! file), applied at start in one transaction and recorded in `baton_migrations`.

use tokio_postgres::Client;

use crate::queries;
use crate::{OpError, OpResult};
use baton_store::StoreError;

/// Every migration this baton knows, in order: (version, SQL).
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_search_indexes.sql")),
    (3, include_str!("../migrations/0003_open_tasks.sql")),
];

/// The newest schema version this baton knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

/// Brings the schema to [`latest`], or refuses a database whose schema is newer.
pub async fn apply(client: &mut Client, location: &str) -> OpResult<()> {
    // Nearly every start finds the schema current: one query, not a locked transaction of
    // five round trips, for each short `baton` process. Any doubt (no table yet, an older or
    // newer version, an error) takes the full path below.
    if let Ok(row) = client.query_typed_one(queries::SCHEMA_VERSION, &[]).await
        && row.try_get::<_, i64>(0).ok() == Some(latest())
    {
        return Ok(());
    }
    let transaction = client.transaction().await?;
    transaction.execute(queries::MIGRATION_LOCK, &[]).await?;
    transaction
        .batch_execute(queries::CREATE_MIGRATIONS_TABLE)
        .await?;
    let current: i64 = transaction
        .query_one(queries::SCHEMA_VERSION, &[])
        .await?
        .try_get(0)?;
    if current > latest() {
        return Err(OpError::Store(StoreError::Database {
            doing: "check the schema",
            location: location.to_owned(),
            source: format!(
                "its schema is version {current}, newer than this baton knows (version {}); \
                 upgrade baton on this machine",
                latest()
            )
            .into(),
        }));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        transaction.batch_execute(sql).await?;
        transaction
            .execute(queries::RECORD_MIGRATION, &[version])
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}
