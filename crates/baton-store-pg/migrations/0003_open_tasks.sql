-- Version 3: the unfinished durable MCP task of a thread, so a server starting up finds the
-- tasks a dead server left. A cache: the task itself is in the thread's lines.
CREATE TABLE open_tasks (
    thread_id uuid PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    task_id   text NOT NULL
);
