-- Writes the projector kept out of the read models, deterministically (part of the state hash).
-- reason 'param_conflict': a param re-logged with a value different from the first (stored) one;
-- only the direct emitter can produce it, the gateway refuses it with MLflow's 400.
-- One row per distinct rejected value; event_id/at are those of the first event that carried it.
CREATE TABLE projector_rejections (
    reason   text   NOT NULL,
    run_id   text   NOT NULL,
    key      text   NOT NULL,
    value    text   NOT NULL,
    event_id text   NOT NULL,
    at       bigint NOT NULL
);
-- md5(value): a param value may hold 6000 characters, more than a btree entry can (2704 bytes).
CREATE UNIQUE INDEX projector_rejections_natural
    ON projector_rejections (reason, run_id, key, md5(value));

-- Event ids of the last-writer-wins events applied (tag set/delete, run update/end/delete/
-- restore, experiment rename/tag/delete/restore): a re-produced copy of one, arriving after newer
-- writes, must not undo them. Other events are idempotent by their natural keys (metric points,
-- first-wins params and inputs, insert-if-absent creates) and are not recorded.
CREATE TABLE projector_applied_events (
    event_id text PRIMARY KEY
);
