-- Param and tag values are strongly tied to their keys ('sgd' is only ever an optimizer), but
-- the planner multiplies the selectivities of `key = $k` and `left(value, 200) = $v` as if they
-- were independent and expected a quarter of the 33k runs an equality on a param matched, then
-- chose nested loops over hash joins. Most-common-value lists of the pairs give it the counts.
CREATE STATISTICS IF NOT EXISTS params_key_prefix (mcv) ON key, (left(value, 200)) FROM params;
CREATE STATISTICS IF NOT EXISTS tags_key_prefix (mcv) ON key, (left(value, 200)) FROM tags;
