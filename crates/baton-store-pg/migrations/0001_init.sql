-- baton's shared session store, version 1. Append-only: change the schema in a new file.
-- Each row of `lines` is exactly one transcript line (SPEC §4), so a thread exports to the
-- same JSONL the files store writes.

CREATE TABLE threads (
    id               uuid PRIMARY KEY,
    owner            text,
    cwd              text NOT NULL,
    created_at       timestamptz(3) NOT NULL,
    -- Millisecond precision, the precision of listing cursors.
    updated_at       timestamptz(3) NOT NULL,
    first_prompt     text,
    last_message     text,
    turns            integer NOT NULL DEFAULT 0,
    model            text,
    source           text NOT NULL,
    -- seq of the newest `compacted` line: rehydration reads from here on.
    compaction_seq   bigint,
    -- seq of the newest `turn_context` line, read with the lines after a compaction.
    turn_context_seq bigint,
    -- seq the next line gets, so lines have no gaps.
    next_seq         bigint NOT NULL,
    -- Bytes of the transcript as JSONL (each line plus its newline): `TranscriptWriter::len`.
    bytes            bigint NOT NULL,
    search_text      text NOT NULL DEFAULT ''
);

CREATE INDEX threads_by_update ON threads (updated_at DESC, id DESC);
CREATE INDEX threads_by_cwd ON threads (cwd, updated_at DESC, id DESC);
CREATE INDEX threads_by_owner ON threads (owner, updated_at DESC, id DESC);

CREATE TABLE lines (
    thread_id uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq       bigint NOT NULL,
    text      text NOT NULL,
    PRIMARY KEY (thread_id, seq)
);

-- Who holds a thread's advisory lock, for the "busy" message. A row may outlive its holder
-- (kill -9); the next holder overwrites it.
CREATE TABLE thread_locks (
    thread_id uuid PRIMARY KEY,
    host      text NOT NULL,
    pid       integer NOT NULL,
    since     timestamptz(3) NOT NULL
);

-- Substring search stays fast at 100 000 threads with trigrams, when the extension can be
-- created (it needs the contrib package and the right to create it); else ILIKE scans.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%); search scans the threads table', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX threads_search ON threads USING gin (search_text gin_trgm_ops);
    END IF;
END
$$;
