-- Counts of each metric series' points per block of steps, at six block sizes, so a sampled
-- history (GetMetricHistoryBulkInterval) finds the point at a given position without numbering
-- every point before it. A block at level L holds the steps s with s >> L equal to its number.
-- Both tables are functions of the set of stored points (a point is counted once, when it is
-- first inserted), so they do not depend on how the log was cut into batches.
CREATE TABLE metric_blocks (
    run_id text     NOT NULL,
    key    text     NOT NULL,
    level  smallint NOT NULL,                     -- 6, 10, 14, 18, 22 or 26: a block is 2^level steps
    block  bigint   NOT NULL,                     -- step >> level
    points bigint   NOT NULL,
    -- points in the key too: a sample reads tens of thousands of counts in an index-only scan
    PRIMARY KEY (run_id, key, level, block) INCLUDE (points)
);

-- Per series and level: how many blocks hold points, and how many points the series has.
CREATE TABLE metric_levels (
    run_id text     NOT NULL,
    key    text     NOT NULL,
    level  smallint NOT NULL,
    blocks bigint   NOT NULL,
    points bigint   NOT NULL,
    PRIMARY KEY (run_id, key, level)
);

-- Counts the points a statement really inserted (a point ON CONFLICT DO NOTHING skipped is not
-- in the transition table). The table names are qualified with the trigger's own schema, not
-- resolved through search_path, so the counts follow the points through a schema rename.
CREATE FUNCTION count_metric_blocks() RETURNS trigger LANGUAGE plpgsql AS $fn$
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
        )
        INSERT INTO %1$I.metric_blocks AS m (run_id, key, level, block, points)
        SELECT run_id, key, level, block, points FROM added
        ON CONFLICT (run_id, key, level, block) DO UPDATE SET points = m.points + excluded.points
    $sql$, TG_TABLE_SCHEMA);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER metric_blocks_count AFTER INSERT ON metrics
REFERENCING NEW TABLE AS new_points
FOR EACH STATEMENT EXECUTE FUNCTION count_metric_blocks();

-- Counts every point of a schema again from scratch: the points stored before this migration,
-- and a replay's rebuild, which switches the trigger off while it folds (projector/versions.py).
-- The finest level comes from the points, the coarser ones from it.
CREATE FUNCTION recount_metric_blocks(target text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('TRUNCATE %1$I.metric_blocks, %1$I.metric_levels', target);
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
END
$fn$;

SELECT recount_metric_blocks(current_schema());
