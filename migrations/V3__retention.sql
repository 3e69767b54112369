-- V3: the index retention prunes through.
--
-- Finished rows (2 = completed, 3 = failed, 4 = cancelled) by status and finish time, so the
-- pruner finds the oldest finished rows of one status without reading anything else. Pending
-- and running rows never enter it, so claims do not pay for it; each finishing update adds
-- one entry. (Building it on a large existing table holds a write lock for the build; it
-- runs inside the migration transaction, so CONCURRENTLY is not available.)
CREATE INDEX tasks_finished_idx ON tasks (status, finished_at) WHERE status >= 2;
