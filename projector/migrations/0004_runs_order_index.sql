-- Search pages are ordered start_time DESC, run_id in byte order (COLLATE "C", so the order
-- does not depend on the database's collation). The index of 0001 used the database collation
-- for run_id, so it never matched that order and every search sorted the experiment's runs.
DROP INDEX runs_experiment_start;
CREATE INDEX runs_experiment_order ON runs (experiment_id, start_time DESC, run_id COLLATE "C");
