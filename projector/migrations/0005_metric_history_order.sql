-- GetMetricHistory returns a series in MLflow's order (timestamp, step, value) and pages resume
-- after the last point returned (api/tokens.py). The primary key orders by step first, so every
-- page sorted the whole series: a million-point history paged by 25,000 sorted it 40 times.
-- Keys only: a key holds at most 250 characters, so an entry stays within a btree entry's size.
CREATE INDEX IF NOT EXISTS metrics_history_order ON metrics (run_id, key, ts, step, value);
