-- Each run's params, tags and inputs as the JSON the API answers with, kept beside the run.
--
-- A search page of 100 runs read ~1,200 param, tag and input rows and turned each into an object
-- of the response: about 3 ms of PostgreSQL and 3 ms of Python, twice what finding the page cost.
-- Params, tags and inputs change seldom (a run's start, a set_tag); metrics change all the time
-- and stay out, read per page from latest_metrics. The documents are a function of the rows
-- (like an index, they are not part of the state a replay compares): triggers on every table
-- they are made of rebuild the documents of the runs a statement touched, whoever writes.
ALTER TABLE runs ADD COLUMN data_doc text;    -- `"params":[...],"tags":[...]`, each only if any
ALTER TABLE runs ADD COLUMN inputs_doc text;  -- `{"dataset_inputs":[...],"model_inputs":[...]}`

-- Names are qualified with `target`, never resolved through search_path: a trigger fires in the
-- schema of its table whatever the session's path, and the documents follow a schema rename.
-- Lists are in byte order of their keys; a value is omitted where the API's Structs omit it.
CREATE FUNCTION refresh_run_documents(target text, ids text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($sql$
        UPDATE %1$I.runs AS r SET
            data_doc = concat_ws(',',
                (SELECT '"params":[' || string_agg(
                            '{"key":' || to_json(p.key) || ',"value":' || to_json(p.value) || '}',
                            ',' ORDER BY p.key COLLATE "C") || ']'
                 FROM %1$I.params AS p WHERE p.run_id = r.run_id),
                (SELECT '"tags":[' || string_agg(
                            '{"key":' || to_json(t.key) || ',"value":' || to_json(t.value) || '}',
                            ',' ORDER BY t.key COLLATE "C") || ']'
                 FROM %1$I.tags AS t WHERE t.run_id = r.run_id)),
            inputs_doc = '{' || concat_ws(',',
                (SELECT '"dataset_inputs":[' || string_agg(
                            '{"dataset":{"name":' || to_json(d.name)
                            || ',"digest":' || to_json(d.digest)
                            || ',"source_type":' || to_json(d.source_type)
                            || ',"source":' || to_json(d.source)
                            || CASE WHEN d.schema <> '' THEN ',"schema":' || to_json(d.schema)
                                    ELSE '' END
                            || CASE WHEN d.profile <> '' THEN ',"profile":' || to_json(d.profile)
                                    ELSE '' END
                            || '}'
                            || CASE WHEN jsonb_array_length(d.tags) > 0
                                    THEN ',"tags":' || d.tags::text ELSE '' END
                            || '}',
                            ',' ORDER BY d.name COLLATE "C", d.digest COLLATE "C") || ']'
                 FROM %1$I.run_dataset_inputs AS d WHERE d.run_id = r.run_id),
                (SELECT '"model_inputs":[' || string_agg(
                            '{"model_id":' || to_json(m.model_id) || '}',
                            ',' ORDER BY m.model_id COLLATE "C") || ']'
                 FROM %1$I.run_model_inputs AS m WHERE m.run_id = r.run_id)) || '}'
        WHERE r.run_id = ANY($1)
    $sql$, target) USING ids;
END
$fn$;

-- One function for every trigger below: each names its transition table `changed`. The
-- projector's batches touch a run's rows in several statements; they set runstream.documents to
-- 'deferred' and refresh each touched run once, at their end (projector/store.py).
CREATE FUNCTION refresh_changed_run_documents() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    ids text[];
BEGIN
    IF current_setting('runstream.documents', true) = 'deferred' THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT array_agg(DISTINCT run_id) FROM changed' INTO ids;
    IF ids IS NOT NULL THEN
        EXECUTE format('SELECT %I.refresh_run_documents($1, $2)', TG_TABLE_SCHEMA)
            USING TG_TABLE_SCHEMA, ids;
    END IF;
    RETURN NULL;
END
$fn$;

-- A run's own insert: params or tags stored before its RunStarted ("orphans") show from then on.
CREATE TRIGGER runs_documents AFTER INSERT ON runs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION refresh_changed_run_documents();

-- Every change to the rows the documents are made of.
DO $$
DECLARE
    tab text;
    happening text;
BEGIN
    FOREACH tab IN ARRAY ARRAY['params', 'tags', 'run_dataset_inputs', 'run_model_inputs'] LOOP
        FOREACH happening IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
            EXECUTE format(
                'CREATE TRIGGER %I AFTER %s ON %I REFERENCING %s TABLE AS changed '
                'FOR EACH STATEMENT EXECUTE FUNCTION refresh_changed_run_documents()',
                tab || '_documents_' || lower(happening), happening, tab,
                CASE happening WHEN 'DELETE' THEN 'OLD' ELSE 'NEW' END);
        END LOOP;
    END LOOP;
END
$$;

-- The runs stored before this migration.
SELECT refresh_run_documents(current_schema(), array_agg(run_id)) FROM runs;
