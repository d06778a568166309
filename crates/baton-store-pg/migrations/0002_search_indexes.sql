-- Search matches the search text, the first prompt or the last message (as the files store's
-- index does). With a trigram index on the search text alone, that OR scanned every thread
-- (about 300 ms at 100 000 threads); with one on each column it is a BitmapOr of three index
-- scans (a few ms). Only when pg_trgm could be created (see 0001).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX threads_first_prompt_search ON threads USING gin (first_prompt gin_trgm_ops);
        CREATE INDEX threads_last_message_search ON threads USING gin (last_message gin_trgm_ops);
    END IF;
END
$$;
