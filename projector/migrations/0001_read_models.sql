-- Read models: disposable projections of the event log, rebuilt by replay.
-- Applied into one schema per read-model version; every name below is unqualified
-- and resolved through the connection's search_path.

CREATE TABLE experiments (
    experiment_id     bigint PRIMARY KEY,
    name              text   NOT NULL,
    artifact_location text   NOT NULL,
    lifecycle_stage   text   NOT NULL,            -- 'active' | 'deleted'
    creation_time     bigint NOT NULL,
    last_update_time  bigint NOT NULL
);
CREATE INDEX experiments_name ON experiments (name);

CREATE TABLE experiment_tags (
    experiment_id bigint NOT NULL,
    key           text   NOT NULL,
    value         text   NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_id          text   PRIMARY KEY,
    experiment_id   bigint NOT NULL,
    run_name        text   NOT NULL,
    user_id         text   NOT NULL,
    status          text   NOT NULL,              -- RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    start_time      bigint NOT NULL,
    end_time        bigint,
    artifact_uri    text   NOT NULL,
    lifecycle_stage text   NOT NULL,              -- 'active' | 'deleted'
    parent_run_id   text,                         -- from the mlflow.parentRunId tag
    root_run_id     text   NOT NULL,              -- top-most known ancestor, itself when top-level
    depth           integer NOT NULL DEFAULT 0    -- 0 for a top-level run
);
CREATE INDEX runs_experiment_start ON runs (experiment_id, start_time DESC, run_id);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_root ON runs (root_run_id);

CREATE TABLE params (
    run_id text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX params_key_value ON params (key, value);

CREATE TABLE tags (
    run_id text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX tags_key_value ON tags (key, value);

-- The latest value per (run, key) by MLflow's rule: max by (step, ts, value).
CREATE TABLE latest_metrics (
    run_id text             NOT NULL,
    key    text             NOT NULL,
    value  double precision NOT NULL,             -- NaN and +-Infinity stored natively
    ts     bigint           NOT NULL,             -- the metric's timestamp, ms
    step   bigint           NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value);

-- One row per distinct (key, step, ts, value) of a run: duplicates fold to one point.
CREATE TABLE metrics (
    run_id         text             NOT NULL,
    key            text             NOT NULL,
    step           bigint           NOT NULL,
    ts             bigint           NOT NULL,
    value          double precision NOT NULL,
    model_id       text,
    dataset_name   text,
    dataset_digest text,
    PRIMARY KEY (run_id, key, step, ts, value)
);

CREATE TABLE run_dataset_inputs (
    run_id      text  NOT NULL,
    name        text  NOT NULL,
    digest      text  NOT NULL,
    source_type text  NOT NULL,
    source      text  NOT NULL,
    schema      text,
    profile     text,
    context     text,                             -- the mlflow.data.context input tag
    tags        jsonb NOT NULL DEFAULT '[]',      -- [{"key": ..., "value": ...}]
    PRIMARY KEY (run_id, name, digest)
);

CREATE TABLE run_model_inputs (
    run_id   text NOT NULL,
    model_id text NOT NULL,
    PRIMARY KEY (run_id, model_id)
);

-- Each partition's next offset, written in the same transaction as the rows it produced.
CREATE TABLE projector_offsets (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);
