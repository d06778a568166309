//! Every query the store runs, with its parameters bound ($1, $2, …), never formatted in.

/// $1 id, $2 owner, $3 cwd, $4 created_at, $5 updated_at, $6 first_prompt, $7 last_message,
/// $8 turns, $9 model, $10 source, $11 compaction_seq, $12 turn_context_seq, $13 next_seq,
/// $14 bytes, $15 search_text.
pub const INSERT_THREAD: &str = "
    INSERT INTO threads (id, owner, cwd, created_at, updated_at, first_prompt, last_message,
                         turns, model, source, compaction_seq, turn_context_seq, next_seq,
                         bytes, search_text)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// $1 thread id, $2 seq, $3 the line's text.
pub const INSERT_LINE: &str = "INSERT INTO lines (thread_id, seq, text) VALUES ($1, $2, $3)";

/// Appends lines in one statement (all or none): $1 thread id, $2 the lines in order, $3 their
/// bytes with the newlines, $4 the index in $2 of the newest `compacted` line or -1, $5 that
/// of the newest `turn_context` line or -1. The row lock on the thread orders concurrent
/// appenders; the lines take the next seqs, so there are no gaps. Returns the transcript's new
/// length in bytes (on each row); no row when the thread does not exist.
/// No indexed column changes (`updated_at` moves when the turn is recorded, as in the files
/// store's index), so PostgreSQL can update the row in place (a HOT update): otherwise every
/// append would add the row to every index again, the trigram indexes of a search text of up
/// to 64 KiB among them.
pub const APPEND_LINES: &str = "
    WITH thread AS (
        UPDATE threads
        SET next_seq = next_seq + cardinality($2::text[]),
            bytes = bytes + $3,
            compaction_seq = CASE WHEN $4::bigint >= 0 THEN next_seq + $4::bigint ELSE compaction_seq END,
            turn_context_seq = CASE WHEN $5::bigint >= 0 THEN next_seq + $5::bigint ELSE turn_context_seq END
        WHERE id = $1
        RETURNING next_seq - cardinality($2::text[]) AS first_seq, bytes
    )
    INSERT INTO lines (thread_id, seq, text)
    SELECT $1, thread.first_seq + new.ord - 1, new.text
    FROM thread, unnest($2::text[]) WITH ORDINALITY AS new(text, ord)
    RETURNING (SELECT bytes FROM thread)";

/// $1 thread id → the transcript's length in bytes.
pub const THREAD_BYTES: &str = "SELECT bytes FROM threads WHERE id = $1";

/// $1 thread id → (bytes, text) of `session_meta`, the newest `turn_context` and every line
/// from the newest compaction on, in order: what rehydration needs and nothing before it.
/// One statement, so one snapshot: the length matches the lines. Three primary-key range
/// scans joined by UNION ALL (each line once): one `OR` of the three conditions would make
/// PostgreSQL walk every row of a long thread and filter (19 ms for a 100 MB thread ending
/// in a compaction, against 0.65 ms this way; BENCHMARKS.md).
pub const READ_FROM_COMPACTION: &str = "
    SELECT t.bytes, l.text
    FROM threads t
    LEFT JOIN LATERAL (
        SELECT seq, text FROM lines
        WHERE thread_id = t.id AND seq >= coalesce(t.compaction_seq, 0)
        UNION ALL
        SELECT seq, text FROM lines
        WHERE thread_id = t.id AND seq = 0 AND coalesce(t.compaction_seq, 0) > 0
        UNION ALL
        SELECT seq, text FROM lines
        WHERE thread_id = t.id AND seq = t.turn_context_seq
          AND t.turn_context_seq > 0 AND t.turn_context_seq < coalesce(t.compaction_seq, 0)
    ) l ON true
    WHERE t.id = $1
    ORDER BY l.seq";

/// $1 thread id → the `session_meta` line.
pub const FIRST_LINE: &str = "SELECT text FROM lines WHERE thread_id = $1 AND seq = 0";

/// $1 thread id → every line, in order.
pub const ALL_LINES: &str = "SELECT text FROM lines WHERE thread_id = $1 ORDER BY seq";

pub const THREAD_IDS: &str = "SELECT id FROM threads";

/// $1 thread, $2 task.
pub const NOTE_OPEN_TASK: &str = "INSERT INTO open_tasks (thread_id, task_id) VALUES ($1, $2)
     ON CONFLICT (thread_id) DO UPDATE SET task_id = excluded.task_id";
/// $1 thread.
pub const FORGET_OPEN_TASK: &str = "DELETE FROM open_tasks WHERE thread_id = $1";
pub const OPEN_TASKS: &str = "SELECT thread_id, task_id FROM open_tasks ORDER BY thread_id";

/// $1 cwd, $2 ILIKE pattern, $3/$4 cursor (updated_at, id), $5 updated at or after,
/// $6 updated before, $7 owner, $8 limit (one more than a page, to tell if more follow).
pub const LIST: &str = "
    SELECT id, cwd, created_at, updated_at, first_prompt, last_message, model, turns, source,
           owner
    FROM threads
    WHERE ($1::text IS NULL OR cwd = $1)
      AND ($2::text IS NULL OR search_text ILIKE $2 OR first_prompt ILIKE $2
           OR last_message ILIKE $2)
      AND ($3::timestamptz IS NULL OR (updated_at, id) < ($3, $4::uuid))
      AND ($5::timestamptz IS NULL OR updated_at >= $5)
      AND ($6::timestamptz IS NULL OR updated_at < $6)
      AND ($7::text IS NULL OR owner = $7)
    ORDER BY updated_at DESC, id DESC
    LIMIT $8";

/// $1 id, $2 cwd, $3 prompt, $4 answer (both clipped for the listing), $5 model, $6 turns
/// added, $7 source, $8 what joins the search text (the whole prompt and answer, joined by a
/// newline; NULL when longer than the limit), $9 the search text's limit in bytes (UTF-8, as
/// Rust counts them, whatever the database's encoding) → `done`: false when the text did not fit
/// whole and room is left, so the caller cuts it to that room ([`SET_SEARCH_TEXT`]).
/// One statement from any connection: `old` locks the row until the update, so a turn
/// recorded by another process meanwhile is not lost. Cutting in SQL would need a function,
/// whose first call costs a fresh connection more than the round trip it saves. The listing
/// is rebuilt from the lines by `reindex`, so its commit does not wait for the disk (see
/// [`LOCK`]); the lines' commits do.
pub const RECORD_TURN: &str = "
    WITH old AS (
        SELECT octet_length(convert_to(search_text, 'UTF8')) AS search_bytes
        FROM threads WHERE id = $1 FOR UPDATE
    ),
    fit AS (
        SELECT coalesce($8 = '' OR search_bytes + 1 + octet_length(convert_to($8, 'UTF8')) <= $9,
                        false) AS whole,
               search_bytes + 1 >= $9 AS full
        FROM old
    )
    UPDATE threads SET
        cwd = $2,
        updated_at = now(),
        first_prompt = coalesce(first_prompt, $3),
        last_message = coalesce($4, last_message),
        model = coalesce($5, model),
        turns = turns + $6,
        source = $7,
        search_text = CASE
            WHEN NOT fit.whole OR $8 = '' THEN search_text
            WHEN search_text = '' THEN $8
            ELSE search_text || E'\\n' || $8
        END
    FROM fit
    WHERE id = $1 AND set_config('synchronous_commit', 'off', true) IS NOT NULL
    RETURNING fit.whole OR fit.full AS done";

/// $1 thread id → its search text.
pub const SEARCH_TEXT: &str = "SELECT search_text FROM threads WHERE id = $1";

/// $1 thread id, $2 its new search text, $3 the length in bytes of the text it was made from:
/// a search text only grows, so another length means another process grew it meanwhile (no
/// row is updated, the caller reads again). Commits without waiting for the disk, as
/// [`RECORD_TURN`].
pub const SET_SEARCH_TEXT: &str = "
    UPDATE threads SET search_text = $2
    WHERE id = $1 AND octet_length(convert_to(search_text, 'UTF8')) = $3
      AND set_config('synchronous_commit', 'off', true) IS NOT NULL";

/// $1 id, $2 first prompt, $3 last message, $4 turns, $5 search text, $6 compaction seq,
/// $7 turn_context seq, $8 next seq, $9 bytes, $10 the newest line's time: a turn that died
/// before it was recorded moves `updated_at` to it, as the files store's reindex does, but
/// never back (a recorded turn's time is a few milliseconds after its last line).
pub const REINDEX_THREAD: &str = "
    UPDATE threads SET
        first_prompt = $2, last_message = $3, turns = $4, search_text = $5,
        compaction_seq = $6, turn_context_seq = $7, next_seq = $8, bytes = $9,
        updated_at = greatest(updated_at, $10)
    WHERE id = $1";

/// $1 lock key, $2 thread id, $3 host, $4 pid → whether this connection now holds the
/// thread's lock; when it does, the holder row names this process, in the same round trip.
/// The row only names the holder in a busy message (the advisory lock itself is what
/// excludes, and dies with the connection), so its commit does not wait for the disk:
/// `set_config(..., true)` lasts until this statement's transaction ends, its commit
/// included. `attempt` calls a volatile function, so PostgreSQL evaluates it once.
pub const LOCK: &str = "
    WITH attempt AS (SELECT pg_try_advisory_lock($1) AS taken),
    holder AS (
        INSERT INTO thread_locks (thread_id, host, pid, since)
        SELECT $2, $3, $4, now()
        FROM attempt, (SELECT set_config('synchronous_commit', 'off', true)) AS no_wait
        WHERE attempt.taken
        ON CONFLICT (thread_id) DO UPDATE SET host = $3, pid = $4, since = now()
    )
    SELECT taken FROM attempt";

/// $1 thread id, $2 host, $3 pid, $4 lock key: forgets our own holder row (its commit not
/// waiting for the disk, see [`LOCK`]) and releases the lock, in one round trip.
pub const UNLOCK: &str = "
    WITH forgotten AS (
        DELETE FROM thread_locks
        WHERE thread_id = $1 AND host = $2 AND pid = $3
          AND set_config('synchronous_commit', 'off', true) IS NOT NULL
    )
    SELECT pg_advisory_unlock($4)";

/// $1 thread id → (host, pid, since) of the recorded holder.
pub const HOLDER: &str = "SELECT host, pid, since FROM thread_locks WHERE thread_id = $1";

/// Serialises concurrent migrations (several servers starting at once).
pub const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7266102538105126912)";

pub const CREATE_MIGRATIONS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS baton_migrations (
        version    bigint PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )";

pub const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM baton_migrations";

pub const RECORD_MIGRATION: &str = "INSERT INTO baton_migrations (version) VALUES ($1)";
