-- A metric threshold (`metrics.accuracy > 0.9`) reads the run ids of every matching latest value
-- and hash-joins them with the other conditions. With run_id in the index that is an index-only
-- scan (10k entries in about 3 ms) instead of a bitmap heap scan over thousands of table pages.
DROP INDEX IF EXISTS latest_metrics_key_value;
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value) INCLUDE (run_id);
