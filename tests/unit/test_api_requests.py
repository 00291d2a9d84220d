"""Reading request fields from a query string or a JSON body, with MLflow's messages."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from api.requests import Fields
from ingest.errors import MlflowError

HINT = " See the API docs for more information about request parameters."


def query(*pairs: tuple[str, str]) -> Fields:
    return Fields.of_query(MultiDict(pairs))


def fails(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(MlflowError) as raised:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    return raised.value.message


def test_repeated_query_keys_make_a_list() -> None:
    fields = query(("run_ids", "a"), ("run_ids", "b"), ("metric_key", "m"))
    assert fields.texts("run_ids") == ["a", "b"]
    assert fields.texts("absent") == []
    assert fields.text("metric_key") == "m"


def test_required_fields_and_run_uuid_fallback() -> None:
    assert query(("run_uuid", "r")).text("run_id", required=True, fallback="run_uuid") == "r"
    assert (
        query(("run_id", ""), ("run_uuid", "r")).text("run_id", required=True, fallback="run_uuid")
        == "r"
    )
    assert (
        Fields.of_body({"run_id": "a", "run_uuid": "b"}).text(
            "run_id", required=True, fallback="run_uuid"
        )
        == "a"
    )
    assert fails(query().text, "run_id", required=True, fallback="run_uuid") == (
        "Missing value for required parameter 'run_id'." + HINT
    )
    assert fails(query().texts, "run_ids", required=True) == (
        "Missing value for required parameter 'run_ids'." + HINT
    )
    # MLflow's check: an empty list in a body is present
    assert Fields.of_body({"run_ids": []}).texts("run_ids", required=True) == []


def test_integers_from_queries_and_bodies() -> None:
    assert query(("max_results", "25000")).integer("max_results") == 25000
    assert query(("n", "-3")).integer("n") == -3
    assert Fields.of_body({"n": 5.0}).integer("n") == 5
    assert Fields.of_body({"n": "7"}).integer("n") == 7
    assert query().integer("n") is None
    assert fails(query(("max_results", "ten")).integer, "max_results") == (
        "Invalid value \"ten\" for parameter 'max_results' supplied:  "
        "Hint: Value was of type 'str'." + HINT
    )
    assert fails(Fields.of_body({"n": True}).integer, "n").startswith("Invalid value true")
    assert fails(Fields.of_body({"n": 1.5}).integer, "n").startswith("Invalid value 1.5")
    assert fails(query(("n", str(2**63))).integer, "n").startswith("Invalid value")


def test_booleans_must_be_true_or_false_in_a_query() -> None:
    assert query(("flag", "TRUE")).boolean("flag") is True
    assert query(("flag", "false")).boolean("flag") is False
    assert query().boolean("flag") is None
    assert fails(query(("flag", "yes")).boolean, "flag") == (
        "Invalid boolean value: yes, must be 'true' or 'false'."
    )
    assert Fields.of_body({"flag": True}).boolean("flag") is True
    assert fails(Fields.of_body({"flag": "true"}).boolean, "flag").startswith("Invalid value")


def test_enums_pass_names_and_numbers_through() -> None:
    assert query(("view_type", "ALL")).enum("view_type") == "ALL"
    assert query(("view_type", "2")).enum("view_type") == 2
    assert Fields.of_body({"view_type": 3}).enum("view_type") == 3
    assert fails(Fields.of_body({"view_type": [1]}).enum, "view_type").startswith("Invalid value")


def test_body_types_are_checked() -> None:
    body = Fields.of_body({"filter": 5, "order_by": ["a", 1], "tags": "x"})
    assert fails(body.text, "filter") == (
        "Invalid value 5 for parameter 'filter' supplied:  Hint: Value was of type 'int'." + HINT
    )
    assert fails(body.texts, "order_by").startswith('Invalid value ["a",1]')
    assert fails(body.texts, "tags").startswith('Invalid value "x"')
    assert Fields.of_body({"filter": ""}).text("filter") == ""
