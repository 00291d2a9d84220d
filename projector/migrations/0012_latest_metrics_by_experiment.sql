-- A search of one experiment sorted by a metric walks that metric's values within the experiment.
--
-- `params.optimizer = 'adam' and metrics.accuracy > 0.9` sorted by `metrics.loss` in one of four
-- experiments of 100k runs matched both filters over all experiments (33k and 10k rows), joined
-- the experiment's 25k runs and sorted the survivors: 24-28 ms. With the run's experiment beside
-- each latest value, the page is the first 100 runs met walking the experiment's losses in
-- order (3,600 index entries), the accuracy filter a set of the experiment's 2,500 matches:
-- 5 ms. Runs never change experiment, so the column is fixed when the row is first written.
ALTER TABLE latest_metrics ADD COLUMN experiment_id bigint;
UPDATE latest_metrics AS l SET experiment_id = r.experiment_id
FROM runs AS r WHERE r.run_id = l.run_id;

-- The projector writes the column itself; any other writer (a hand edit, a bulk load) that
-- leaves it out gets it from the run, or, before the run exists, when the run arrives (below).
-- A value the writer gives is kept: the column is derived data, like the run documents of
-- 0010, and only the projector (one writer per run, runs before values) keeps it right by
-- construction; the tests check it against the runs. Qualified with the trigger's own schema,
-- not resolved through search_path (as in 0008).
CREATE FUNCTION fill_latest_metric_experiment() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('SELECT experiment_id FROM %I.runs WHERE run_id = $1', TG_TABLE_SCHEMA)
        INTO NEW.experiment_id USING NEW.run_id;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER latest_metrics_experiment BEFORE INSERT ON latest_metrics
FOR EACH ROW WHEN (NEW.experiment_id IS NULL)
EXECUTE FUNCTION fill_latest_metric_experiment();

-- A value stored before its run (a MetricLogged folded ahead of its RunStarted, a hand edit)
-- gets the experiment when the run arrives. The projector writes a batch's runs
-- before its values, so on its path this finds nothing: one index probe per new run.
CREATE FUNCTION adopt_latest_metrics() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($sql$
        UPDATE %1$I.latest_metrics AS l SET experiment_id = n.experiment_id
        FROM new_runs AS n
        WHERE l.run_id = n.run_id AND l.experiment_id IS NULL
    $sql$, TG_TABLE_SCHEMA);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER runs_adopt_latest_metrics AFTER INSERT ON runs
REFERENCING NEW TABLE AS new_runs
FOR EACH STATEMENT EXECUTE FUNCTION adopt_latest_metrics();

CREATE INDEX latest_metrics_experiment_order
    ON latest_metrics (experiment_id, key, value) INCLUDE (run_id);
ANALYZE latest_metrics;
