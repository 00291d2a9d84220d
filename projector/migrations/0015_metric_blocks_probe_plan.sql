-- The block-count trigger (0014) with a plan that fits every batch size.
--
-- 0014's statement is planned once per session, for the batch that first fires it, and kept.
-- Its LEFT JOIN to metric_blocks let a plan made for a few hundred points read metric_blocks
-- whole into a hash table, which is right for that batch; but every one-point batch after it
-- then read the whole table too (a 180,000-row metric_blocks and a first batch of 256 points
-- were enough), until autovacuum's next ANALYZE had the plan made again. The look-up for a
-- block already counted is now a LATERAL subquery with LIMIT 1, which PostgreSQL does not turn
-- into a join: it stays a probe of the primary key per block, whatever the batch, for one
-- point as for thousands (as 0011's EXECUTE chose for big tables anyway).
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
               count(*) FILTER (WHERE b.counted IS NULL) AS blocks, sum(a.points) AS points
        FROM added AS a
        LEFT JOIN LATERAL (
            SELECT true AS counted FROM metric_blocks AS b
            WHERE b.run_id = a.run_id AND b.key = a.key AND b.level = a.level
              AND b.block = a.block
            LIMIT 1
        ) AS b ON true
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
