-- The block-count trigger (0008, 0011) with a plan PostgreSQL keeps, instead of one built anew.
--
-- It ran its statement through EXECUTE format(...), to name its tables in the trigger's own
-- schema, and EXECUTE plans every time: about 1.0 ms of a 1.3 ms one-point INSERT, every time
-- the projector folds a batch (a batch of one point when metrics trickle in, as from the mlflow
-- client's log_metric). A statement written in the function body is planned once per session
-- and reused while search_path names the same schemas: 0.25 ms. So the function now points search_path
-- at the table's own schema (pg_temp last, so a temporary table cannot stand in for ours) for
-- its statement, and puts the caller's search_path back afterwards: the counts still follow
-- the points through a schema rename (a replay's swap) and whatever the writer's search_path.
-- The statement is 0011's, word for word.
CREATE OR REPLACE FUNCTION count_metric_blocks() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    callers_path CONSTANT text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', format('%I, pg_temp', TG_TABLE_SCHEMA), true);
    WITH finest AS (
        SELECT run_id, key, step >> 6 AS block, count(*) AS points
        FROM new_points GROUP BY 1, 2, 3
    ), added AS (
        SELECT run_id, key, 6::smallint AS level, block, points FROM finest
      UNION ALL
        SELECT f.run_id, f.key, l.level, f.block >> (l.level - 6), sum(f.points)
        FROM finest AS f CROSS JOIN unnest('{10,14,18,22,26}'::smallint[]) AS l(level)
        GROUP BY 1, 2, 3, 4
    ), per_level AS (
        SELECT a.run_id, a.key, a.level,
               count(*) FILTER (WHERE b.block IS NULL) AS blocks, sum(a.points) AS points
        FROM added AS a
        LEFT JOIN metric_blocks AS b
            ON b.run_id = a.run_id AND b.key = a.key AND b.level = a.level
           AND b.block = a.block
        GROUP BY 1, 2, 3
    ), levels AS (
        INSERT INTO metric_levels AS m (run_id, key, level, blocks, points)
        SELECT run_id, key, level, blocks, points FROM per_level
        ON CONFLICT (run_id, key, level) DO UPDATE
        SET blocks = m.blocks + excluded.blocks, points = m.points + excluded.points
    ), extent AS (
        INSERT INTO metric_series AS m (run_id, key, min_step, max_step, unique_steps)
        SELECT run_id, key, min(step), max(step), count(*) = count(DISTINCT step)
        FROM new_points GROUP BY 1, 2
        ON CONFLICT (run_id, key) DO UPDATE
        SET min_step = least(m.min_step, excluded.min_step),
            max_step = greatest(m.max_step, excluded.max_step),
            unique_steps = m.unique_steps AND excluded.unique_steps
                           AND excluded.min_step > m.max_step
    )
    INSERT INTO metric_blocks AS m (run_id, key, level, block, points)
    SELECT run_id, key, level, block, points FROM added
    ON CONFLICT (run_id, key, level, block) DO UPDATE SET points = m.points + excluded.points;
    PERFORM set_config('search_path', callers_path, true);
    RETURN NULL;
END
$fn$;
