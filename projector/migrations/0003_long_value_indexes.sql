-- A btree entry holds at most 2704 bytes, but MLflow allows param values of 6000 characters and
-- run tag values of 8000: with 0001's (key, value) indexes such a value (when it does not
-- compress) fails the whole projector batch with "index row size exceeds maximum", stalling the
-- partition. Index a bounded prefix instead; an equality lookup stays indexable as
-- `key = $1 AND left(value, 200) = left($2, 200) AND value = $2`.
DROP INDEX params_key_value;
CREATE INDEX params_key_value ON params (key, left(value, 200));
DROP INDEX tags_key_value;
CREATE INDEX tags_key_value ON tags (key, left(value, 200));
