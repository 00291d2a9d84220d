"""Parse MLflow `order_by` clauses into the full ordering a search applies, tie-breakers included.

Runs (`sqlalchemy_store._get_orderby_clauses`): the user's keys, then `start_time DESC` unless
start_time is already a key, then `run_id ASC` so every page boundary is deterministic.
Experiments (`_get_search_experiments_order_by_clauses`): `creation_time DESC, experiment_id ASC`
by default; a custom order gets `experiment_id DESC` appended unless it names experiment_id.
Where each key places missing values and NaN is the SQL compiler's job (missing last both ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from api.grammar import (
    EXPERIMENT_ATTRIBUTES,
    KEY_ALIASES,
    RUN_ORDER_ATTRIBUTES,
    Token,
    check_text,
    experiment_identifier,
    read_identifier,
    run_identifier,
    shown,
    tokenize,
)
from ingest.errors import invalid_parameter

OrderEntity = Literal["metric", "parameter", "tag", "attribute"]

# Each key joins one table and binds one parameter; real clients send a handful.
MAX_ORDER_KEYS = 100
MAX_CLAUSE_CHARS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderKey:
    """One sort key: what to sort by and in which direction."""

    entity: OrderEntity
    key: str
    ascending: bool


RUN_DEFAULT_TIEBREAK = OrderKey(entity="attribute", key="start_time", ascending=False)
RUN_FINAL_TIEBREAK = OrderKey(entity="attribute", key="run_id", ascending=True)
EXPERIMENT_DEFAULT_ORDER = (
    OrderKey(entity="attribute", key="creation_time", ascending=False),
    OrderKey(entity="attribute", key="experiment_id", ascending=True),
)
EXPERIMENT_TIEBREAK = OrderKey(entity="attribute", key="experiment_id", ascending=False)


def _split_clause(clause: str) -> tuple[list[Token], bool]:
    """Split `<identifier> [ASC|DESC]` into the identifier's tokens and the direction."""
    if not isinstance(clause, str):
        raise invalid_parameter(f"Invalid order_by clause {clause!r}. Could not be parsed.")
    unparsable = invalid_parameter(
        f"Invalid order_by clause '{shown(clause)}'. Could not be parsed."
    )
    if len(clause) > MAX_CLAUSE_CHARS:
        raise unparsable
    check_text(clause, "order_by clause")
    # MLflow rejects surrounding whitespace (`'params.p '` is "Could not be parsed")
    if not clause or clause[0].isspace() or clause[-1].isspace():
        raise unparsable
    tokens = tokenize(clause)
    end = read_identifier(tokens, 0)
    if end == 0 or len(tokens) > end + 1:
        raise unparsable
    if len(tokens) == end:
        return tokens, True
    direction = tokens[end]
    if direction.kind != "name" or not direction.spaced:
        raise unparsable
    if direction.word not in {"ASC", "DESC"}:
        raise invalid_parameter(f"Invalid ordering key in order_by clause '{shown(clause)}'.")
    return tokens[:end], direction.word == "ASC"


def _checked_list(order_by: Sequence[str] | None) -> list[str]:
    if order_by is None:
        return []
    if isinstance(order_by, str) or len(order_by) > MAX_ORDER_KEYS:
        raise invalid_parameter(
            f"Invalid value for parameter 'order_by' supplied: expected a list of at most "
            f"{MAX_ORDER_KEYS} strings."
        )
    return list(order_by)


def parse_run_order_by(order_by: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Return the complete run ordering for a SearchRuns `order_by` list."""
    clauses = _checked_list(order_by)
    keys: list[OrderKey] = []
    seen: set[tuple[str, str]] = set()
    for clause in clauses:
        tokens, ascending = _split_clause(clause)
        entity, raw_key = run_identifier(tokens, RUN_ORDER_ATTRIBUTES)
        if entity == "dataset":
            raise invalid_parameter(f"Invalid identifier type '{entity}'")
        key = KEY_ALIASES.get(raw_key, raw_key) if entity == "attribute" else raw_key
        # MLflow answers duplicates with a 500; it is the caller's mistake, so we say 400
        if (entity, key) in seen:
            raise invalid_parameter(f"`order_by` contains duplicate fields: {shown(str(clauses))}")
        seen.add((entity, key))
        keys.append(OrderKey(entity=entity, key=key, ascending=ascending))
    if ("attribute", "start_time") not in seen:
        keys.append(RUN_DEFAULT_TIEBREAK)
    if ("attribute", "run_id") not in seen:
        keys.append(RUN_FINAL_TIEBREAK)
    return tuple(keys)


def parse_experiment_order_by(order_by: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Return the complete experiment ordering for a SearchExperiments `order_by` list."""
    clauses = _checked_list(order_by)
    if not clauses:
        return EXPERIMENT_DEFAULT_ORDER
    keys: list[OrderKey] = []
    for clause in clauses:
        tokens, ascending = _split_clause(clause)
        entity, key = experiment_identifier(tokens, EXPERIMENT_ATTRIBUTES)
        if entity != "attribute":
            raise invalid_parameter(f"Invalid order_by entity: {entity}")
        keys.append(OrderKey(entity=entity, key=key, ascending=ascending))
    if not any(k.key == "experiment_id" for k in keys):
        keys.append(EXPERIMENT_TIEBREAK)
    return tuple(keys)
