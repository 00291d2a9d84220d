-- A search in the run order with a param or tag equality walks that equality's runs in order.
--
-- `tags.team = 'nlp'` over four experiments of 100k runs, newest first, built the set of all
-- 12.5k runs with the tag (4 ms), then walked each experiment's runs in order testing each
-- against it: 5.5 ms a page. With each param and tag carrying its run's experiment, start time
-- and lifecycle stage, the index below lists an equality's runs per experiment in the run order
-- itself, with what the default view tests: a page is its first 101 entries of each experiment,
-- read from the index alone (0.3 ms). Runs never change experiment or start time, so those are
-- fixed when the row is first written; a run's deletion or restoration is copied (below).
--
-- The backfill rewrites both tables (about 35 s for 100k runs' 0.9M rows on a 2-core machine) and
-- leaves their old row versions to VACUUM. It changes nothing the run documents (0010) are made
-- of, so their triggers stand aside while it runs.
SELECT set_config('runstream.documents', 'deferred', true);
ALTER TABLE params
    ADD COLUMN experiment_id bigint, ADD COLUMN start_time bigint, ADD COLUMN lifecycle_stage text;
UPDATE params AS p
SET experiment_id = r.experiment_id, start_time = r.start_time, lifecycle_stage = r.lifecycle_stage
FROM runs AS r WHERE r.run_id = p.run_id;
ALTER TABLE tags
    ADD COLUMN experiment_id bigint, ADD COLUMN start_time bigint, ADD COLUMN lifecycle_stage text;
UPDATE tags AS t
SET experiment_id = r.experiment_id, start_time = r.start_time, lifecycle_stage = r.lifecycle_stage
FROM runs AS r WHERE r.run_id = t.run_id;
SELECT set_config('runstream.documents', '', true);

-- As for latest_metrics (0012): the projector writes the columns itself (projector/store.py);
-- any other writer that leaves one out gets them from the run, or, before the run exists, when
-- the run arrives. The tests check the columns against the runs.
CREATE FUNCTION fill_run_copies() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format(
        'SELECT experiment_id, start_time, lifecycle_stage FROM %I.runs WHERE run_id = $1',
        TG_TABLE_SCHEMA
    ) INTO NEW.experiment_id, NEW.start_time, NEW.lifecycle_stage USING NEW.run_id;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER params_fill_run_copies BEFORE INSERT ON params
FOR EACH ROW
WHEN (NEW.experiment_id IS NULL OR NEW.start_time IS NULL OR NEW.lifecycle_stage IS NULL)
EXECUTE FUNCTION fill_run_copies();
CREATE TRIGGER tags_fill_run_copies BEFORE INSERT ON tags
FOR EACH ROW
WHEN (NEW.experiment_id IS NULL OR NEW.start_time IS NULL OR NEW.lifecycle_stage IS NULL)
EXECUTE FUNCTION fill_run_copies();

-- Rows stored before their run, found through these indexes: for a batch of 5,000 new runs
-- PostgreSQL otherwise scanned the whole table (it expects ~1 row without the copies, and picked
-- a sequential scan over 5,000 key lookups), in every batch of a rebuild too. They hold only such
-- rows, usually none; a rebuild keeps its partial indexes (projector/versions.py). The latest
-- values of 0012 had the same hole.
CREATE INDEX params_before_their_run ON params (run_id) WHERE experiment_id IS NULL;
CREATE INDEX tags_before_their_run ON tags (run_id) WHERE experiment_id IS NULL;
CREATE INDEX latest_metrics_before_their_run ON latest_metrics (run_id)
WHERE experiment_id IS NULL;

CREATE FUNCTION adopt_run_copies() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    target text;
BEGIN
    FOREACH target IN ARRAY ARRAY['params', 'tags'] LOOP
        EXECUTE format($sql$
            UPDATE %1$I.%2$I AS c
            SET experiment_id = n.experiment_id, start_time = n.start_time,
                lifecycle_stage = n.lifecycle_stage
            FROM new_runs AS n
            WHERE c.run_id = n.run_id AND c.experiment_id IS NULL
        $sql$, TG_TABLE_SCHEMA, target);
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER runs_adopt_run_copies AFTER INSERT ON runs
REFERENCING NEW TABLE AS new_runs
FOR EACH STATEMENT EXECUTE FUNCTION adopt_run_copies();

-- A run deleted or restored takes its params and tags along, in the same statement, for any
-- writer but the projector: its batches copy the stages of the runs they changed in one
-- statement per table at their end (projector/store.py), where this trigger would run two
-- statements per run (an experiment's deletion deletes each of its runs).
CREATE FUNCTION copy_run_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    target text;
BEGIN
    IF current_setting('runstream.run_copies', true) = 'deferred' THEN
        RETURN NULL;
    END IF;
    FOREACH target IN ARRAY ARRAY['params', 'tags'] LOOP
        EXECUTE format(
            'UPDATE %I.%I SET lifecycle_stage = $1 WHERE run_id = $2',
            TG_TABLE_SCHEMA, target
        ) USING NEW.lifecycle_stage, NEW.run_id;
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER runs_copy_lifecycle AFTER UPDATE OF lifecycle_stage ON runs
FOR EACH ROW WHEN (OLD.lifecycle_stage IS DISTINCT FROM NEW.lifecycle_stage)
EXECUTE FUNCTION copy_run_lifecycle();

-- These replace the (key, value_prefix) INCLUDE (run_id) indexes of 0009: their leading columns
-- are the same, so an equality's set of runs over every experiment (a membership test, a rare
-- value) is still one index-only range. run_id is in byte order, as in runs_experiment_order.
-- A rebuild interrupted before this release has dropped the old ones already, and builds them
-- again at its end beside these (redundant, not wrong); a rebuild started now never has them.
DROP INDEX IF EXISTS params_key_value;
CREATE INDEX params_run_order
    ON params (key, value_prefix, experiment_id, start_time DESC, run_id COLLATE "C")
    INCLUDE (lifecycle_stage);
DROP INDEX IF EXISTS tags_key_value;
CREATE INDEX tags_run_order
    ON tags (key, value_prefix, experiment_id, start_time DESC, run_id COLLATE "C")
    INCLUDE (lifecycle_stage);
ANALYZE params, tags;
