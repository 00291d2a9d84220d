-- Per metric series: its first and last step, and whether no step holds two points.
--
-- Most series are logged a point per step, in step order: then the point at position p of the
-- points in (step, timestamp, value) order is the point at step first + p, and a sampled history
-- (api/sampling.py) reads each kept point with one index lookup by step, instead of locating it
-- through the block counts and skipping up to 64 index entries to it (16 of 21 µs a point).
--
-- `unique_steps` is kept conservatively, which is all a reader needs: true only while every
-- statement's new points had distinct steps, all beyond the last stored step (the usual append);
-- any other insert makes it false, even if the steps stay unique, and the sampler then takes the
-- block counts. A recount (a replay's rebuild) sets it exactly. So it depends on the order the
-- points came in, and like the block counts it is derived data outside the state a replay
-- compares; a sample's answer never depends on it.
CREATE TABLE metric_series (
    run_id       text    NOT NULL,
    key          text    NOT NULL,
    min_step     bigint  NOT NULL,
    max_step     bigint  NOT NULL,
    unique_steps boolean NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE OR REPLACE FUNCTION count_metric_blocks() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($sql$
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
            LEFT JOIN %1$I.metric_blocks AS b
                ON b.run_id = a.run_id AND b.key = a.key AND b.level = a.level
               AND b.block = a.block
            GROUP BY 1, 2, 3
        ), levels AS (
            INSERT INTO %1$I.metric_levels AS m (run_id, key, level, blocks, points)
            SELECT run_id, key, level, blocks, points FROM per_level
            ON CONFLICT (run_id, key, level) DO UPDATE
            SET blocks = m.blocks + excluded.blocks, points = m.points + excluded.points
        ), extent AS (
            INSERT INTO %1$I.metric_series AS m (run_id, key, min_step, max_step, unique_steps)
            SELECT run_id, key, min(step), max(step), count(*) = count(DISTINCT step)
            FROM new_points GROUP BY 1, 2
            ON CONFLICT (run_id, key) DO UPDATE
            SET min_step = least(m.min_step, excluded.min_step),
                max_step = greatest(m.max_step, excluded.max_step),
                unique_steps = m.unique_steps AND excluded.unique_steps
                               AND excluded.min_step > m.max_step
        )
        INSERT INTO %1$I.metric_blocks AS m (run_id, key, level, block, points)
        SELECT run_id, key, level, block, points FROM added
        ON CONFLICT (run_id, key, level, block) DO UPDATE SET points = m.points + excluded.points
    $sql$, TG_TABLE_SCHEMA);
    RETURN NULL;
END
$fn$;

-- The recount (a replay's rebuild, and 0008's backfill) sets the extents exactly.
CREATE OR REPLACE FUNCTION recount_metric_blocks(target text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('TRUNCATE %1$I.metric_blocks, %1$I.metric_levels, %1$I.metric_series', target);
    EXECUTE format($sql$
        INSERT INTO %1$I.metric_blocks (run_id, key, level, block, points)
        SELECT run_id, key, 6, step >> 6, count(*) FROM %1$I.metrics GROUP BY run_id, key, step >> 6
    $sql$, target);
    EXECUTE format($sql$
        INSERT INTO %1$I.metric_blocks (run_id, key, level, block, points)
        SELECT b.run_id, b.key, l.level, b.block >> (l.level - 6), sum(b.points)
        FROM %1$I.metric_blocks AS b CROSS JOIN unnest('{10,14,18,22,26}'::smallint[]) AS l(level)
        WHERE b.level = 6
        GROUP BY 1, 2, 3, 4
    $sql$, target);
    EXECUTE format($sql$
        INSERT INTO %1$I.metric_levels (run_id, key, level, blocks, points)
        SELECT run_id, key, level, count(*), sum(points) FROM %1$I.metric_blocks GROUP BY 1, 2, 3
    $sql$, target);
    EXECUTE format($sql$
        INSERT INTO %1$I.metric_series (run_id, key, min_step, max_step, unique_steps)
        SELECT run_id, key, min(step), max(step), count(*) = count(DISTINCT step)
        FROM %1$I.metrics GROUP BY 1, 2
    $sql$, target);
END
$fn$;

-- The series stored before this migration (the trigger is on: a rebuild in progress, which has
-- it off, is recounted at its end).
INSERT INTO metric_series (run_id, key, min_step, max_step, unique_steps)
SELECT run_id, key, min(step), max(step), count(*) = count(DISTINCT step)
FROM metrics GROUP BY 1, 2;
