-- The write-side registry: what the gateway must decide when a request arrives
-- (ARCHITECTURE.md decision 3). Rows are reservations taken in the same transaction that
-- waits for Kafka's acknowledgement, so a rejected or failed write reserves nothing.

-- Experiment "0" (Default) is reserved by the gateway at start-up; new ids come from here.
CREATE SEQUENCE experiment_ids START WITH 1;

CREATE TABLE experiments (
    experiment_id     bigint PRIMARY KEY,
    name              text   NOT NULL UNIQUE,     -- unique across active and deleted
    lifecycle_stage   text   NOT NULL DEFAULT 'active',
    artifact_location text   NOT NULL
);

CREATE TABLE experiment_tags (
    experiment_id bigint NOT NULL,
    key           text   NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

-- A run's info as the write API must answer it (UpdateRun returns run_info).
CREATE TABLE runs (
    run_id          text   PRIMARY KEY,
    experiment_id   bigint NOT NULL,
    lifecycle_stage text   NOT NULL DEFAULT 'active',
    run_name        text   NOT NULL,
    user_id         text   NOT NULL,
    status          text   NOT NULL,
    start_time      bigint NOT NULL,
    end_time        bigint,
    artifact_uri    text   NOT NULL
);
CREATE INDEX runs_experiment ON runs (experiment_id);

-- Param immutability: the first value of (run, key) wins.
CREATE TABLE params (
    run_id text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Which tag keys a run has, so deleting a missing tag is MLflow's 404.
CREATE TABLE run_tags (
    run_id text NOT NULL,
    key    text NOT NULL,
    PRIMARY KEY (run_id, key)
);
