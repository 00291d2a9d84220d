"""Parse MLflow's run and experiment filter grammar into a typed AST, with MLflow's 400 messages.

A filter is comparisons joined by AND (`mlflow/utils/search_utils.py`); OR, NOT, parentheses and
`;` are rejected. Checks MLflow makes later, in its SQL store (comparators per type, experiment
ids that are not integers), happen here too, so a parsed filter always compiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from api.grammar import (
    EXPERIMENT_ATTRIBUTES,
    EXPERIMENT_NUMERIC_ATTRIBUTES,
    HEADS,
    INT64_MAX,
    INT64_MIN,
    KEY_ALIASES,
    RUN_NUMERIC_ATTRIBUTES,
    RUN_SEARCH_ATTRIBUTES,
    Entity,
    Token,
    check_text,
    experiment_identifier,
    raw_text,
    read_identifier,
    run_identifier,
    set_text,
    shown,
    tokenize,
)
from ingest.errors import invalid_parameter

NumberOp = Literal["=", "!=", "<", "<=", ">", ">="]
TextOp = Literal["=", "!=", "LIKE", "ILIKE"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NumberCompare:
    """A metric, numeric attribute or experiment id compared with a number."""

    entity: Entity
    key: str
    op: NumberOp
    value: int | float


@dataclass(frozen=True, slots=True, kw_only=True)
class TextCompare:
    """A param, tag, string attribute, experiment name or dataset field compared with a string."""

    entity: Entity
    key: str
    op: TextOp
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InList:
    """`key IN (...)`, or `key NOT IN (...)` when negated; experiment ids are ints."""

    entity: Entity
    key: str
    negated: bool
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class IsNull:
    """`key IS NULL`, or `key IS NOT NULL` when negated (params and tags only)."""

    entity: Entity
    key: str
    negated: bool


Predicate = NumberCompare | TextCompare | InList | IsNull

# Past these a query would approach PostgreSQL's 32767 bind parameters and any sane plan size.
MAX_FILTER_CHARS = 1_000_000
MAX_PREDICATES = 250

_NUMBER_OPS: tuple[NumberOp, ...] = ("=", "!=", "<", "<=", ">", ">=")
_TEXT_OPS: tuple[TextOp, ...] = ("=", "!=", "LIKE", "ILIKE")
_NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})
_LIST_OPS = frozenset({"IN", "NOT IN"})
_STRING_ATTRIBUTE_OPS = frozenset(_TEXT_OPS) | _LIST_OPS
_KEY_VALUE_OPS = frozenset(_TEXT_OPS) | _NULL_OPS
_WORD_OPS = frozenset({"LIKE", "ILIKE", "RLIKE", "REGEXP", "IN"})
# Keywords sqlparse never reads as an identifier, so MLflow rejects them as values.
_KEYWORD_VALUES = frozenset({"TRUE", "FALSE", "NULL", "AND", "OR", "NOT", "IS", "IN"})


@dataclass(frozen=True, slots=True)
class _Clause:
    """One comparison's tokens before any meaning is given to them."""

    lhs: list[Token]
    op: str
    value: list[Token]


def _comparator(tokens: list[Token], i: int) -> tuple[str, int] | None:
    """Return the comparator at i and the index after it, or None."""
    if i >= len(tokens):
        return None
    if tokens[i].kind == "op":
        return tokens[i].text, i + 1
    words = [t.word for t in tokens[i : i + 3]] + ["", ""]
    if words[0] in _WORD_OPS:
        return words[0], i + 1
    if words[0] == "NOT" and words[1] in _WORD_OPS:
        return f"NOT {words[1]}", i + 2
    if words[:2] == ["IS", "NULL"]:
        return "IS NULL", i + 2
    if words[:3] == ["IS", "NOT", "NULL"]:
        return "IS NOT NULL", i + 3
    return None


def _structure(tokens: list[Token]) -> _Clause | None:
    """Split one AND-separated clause into lhs, comparator and value tokens, or None."""
    end = read_identifier(tokens, 0)
    if end == 0 and tokens[0].kind in {"num", "sq"}:
        end = 1  # not an identifier, but MLflow says so only once every clause is well-formed
    found = _comparator(tokens, end) if end else None
    if found is None:
        return None
    op, i = found
    if op in _NULL_OPS:
        return _Clause(tokens[:end], op, []) if i == len(tokens) else None
    if i < len(tokens) and tokens[i].kind == "lparen":
        inner = tokens[i + 1 : -1]
        if tokens[-1].kind != "rparen" or any(t.kind in {"lparen", "rparen"} for t in inner):
            return None
        return _Clause(tokens[:end], op, tokens[i:])
    stop = read_identifier(tokens, i)
    if stop == i and i < len(tokens) and tokens[i].kind in {"sq", "num"}:
        stop = i + 1
    if op in _LIST_OPS or stop == i or stop != len(tokens) or tokens[i].word in _KEYWORD_VALUES:
        return None
    return _Clause(tokens[:end], op, tokens[i:])


def _clauses(text: str) -> list[_Clause]:
    """Tokenize a filter, split it at AND and check every clause's shape before any meaning."""
    if not isinstance(text, str):
        raise invalid_parameter(f"Invalid filter {shown(repr(text))}: expected a string.")
    if len(text) > MAX_FILTER_CHARS:
        raise invalid_parameter(f"Invalid filter: longer than {MAX_FILTER_CHARS} characters.")
    check_text(text, "filter")
    tokens = tokenize(text)
    if any(t.kind == "semi" for t in tokens[:-1]):
        raise invalid_parameter(
            f"Search filter contained multiple expression {shown(text)!r}. "
            "Provide AND-ed expression list."
        )
    groups: list[list[Token]] = [[]]
    for i, token in enumerate(tokens):
        # `AND` straight after a dot is a key segment (`params.AND`), not the conjunction
        if token.word == "AND" and not (i and tokens[i - 1].kind == "dot" and not token.spaced):
            groups.append([])
        else:
            groups[-1].append(token)
    # MLflow ignores stray ANDs (leading, trailing, doubled), so empty groups just drop out
    parsed = [(group, _structure(group)) for group in groups if group]
    invalid = [f"'{shown(raw_text(group))}'" for group, clause in parsed if clause is None]
    if invalid:
        raise invalid_parameter(f"Invalid clause(s) in filter string: {', '.join(invalid)}")
    if len(parsed) > MAX_PREDICATES:
        raise invalid_parameter(f"Invalid filter: more than {MAX_PREDICATES} comparisons.")
    return [clause for _, clause in parsed if clause is not None]


def _number(tokens: list[Token]) -> int | float | None:
    """Return the numeric literal the value tokens hold, or None when they hold anything else."""
    if len(tokens) != 1 or tokens[0].kind != "num":
        return None
    text = tokens[0].text
    # int() refuses over 4300 digits; a literal this long is outside every column anyway
    if re.fullmatch(r"-?\d{1,64}", text, flags=re.ASCII) is None:
        return float(text)
    return int(text)


def _string(tokens: list[Token], message: str) -> str:
    """Return a quoted string value's content, else raise MLflow's message for the value."""
    if len(tokens) == 1 and tokens[0].kind in {"sq", "dq"}:
        return tokens[0].text[1:-1]  # MLflow trims the quotes and unescapes nothing
    if tokens[0].kind in HEADS:
        raise invalid_parameter(
            "Parameter value is either not quoted or unidentified quote types used for "
            f"string value {shown(raw_text(tokens))}. Use either single or double quotes."
        )
    raise invalid_parameter(message)


def _string_list(tokens: list[Token]) -> tuple[str, ...]:
    """Return the strings of a `('a', "b")` list, with MLflow's messages for bad lists."""
    items = tokens[1:-1]
    prefix = "While parsing a list in the query, expected"
    if not items:
        raise invalid_parameter(f"{prefix} a non-empty list of string values, but got empty list")
    if any(t.kind == "num" for t in items[::2]):
        raise invalid_parameter(
            f"{prefix} string value, punctuation, or whitespace, but got different type in "
            f"list: {shown(raw_text(tokens))}"
        )
    strings, commas = items[::2], items[1::2]
    if any(t.kind not in {"sq", "dq"} for t in strings) or any(t.kind != "comma" for t in commas):
        raise invalid_parameter(
            f"{prefix} a non-empty list of string values, but got ill-formed list."
        )
    return tuple(t.text[1:-1] for t in strings)


def _check_op(op: str, allowed: frozenset[str] | tuple[str, ...]) -> None:
    if op not in allowed:
        raise invalid_parameter(
            f"Invalid comparator '{shown(op)}' not one of '{set_text(allowed)}'"
        )


def _number_op(op: str) -> NumberOp:
    for candidate in _NUMBER_OPS:
        if op == candidate:
            return candidate
    raise invalid_parameter(
        f"Invalid comparator '{shown(op)}' not one of '{set_text(_NUMBER_OPS)}'"
    )


def _text_op(op: str) -> TextOp:
    for candidate in _TEXT_OPS:
        if op == candidate:
            return candidate
    raise invalid_parameter(f"Invalid comparator '{shown(op)}' not one of '{set_text(_TEXT_OPS)}'")


def _text_predicate(
    entity: Entity, key: str, op: str, value: str | tuple[str, ...], is_list: bool
) -> Predicate:
    """Build the string predicate, refusing a list with `=` and friends and IN without one."""
    if is_list != (op in _LIST_OPS):
        raise invalid_parameter(
            f"Invalid comparator '{shown(op)}' for value {shown(repr(value))}: "
            "IN and NOT IN take a list, the other comparators a single value."
        )
    if isinstance(value, tuple):
        return InList(entity=entity, key=key, negated=op == "NOT IN", values=value)
    return TextCompare(entity=entity, key=key, op=_text_op(op), value=value)


def _require_identifier(clause: _Clause) -> None:
    if clause.lhs[0].kind not in HEADS:
        raise invalid_parameter(
            f"Invalid comparison clause. Expected 'Identifier' found '{shown(clause.lhs[0].text)}'"
        )


def _numeric(value: list[Token], what: str) -> int | float:
    number = _number(value)
    if number is None:
        raise invalid_parameter(
            f"Expected numeric value type for {what}. Found {shown(raw_text(value))}"
        )
    return number


def _run_predicate(clause: _Clause) -> Predicate:
    _require_identifier(clause)
    entity, raw_key = run_identifier(clause.lhs, RUN_SEARCH_ATTRIBUTES)
    # Aliases name attributes only: a param called "Run Name" is that param.
    key = KEY_ALIASES.get(raw_key, raw_key) if entity == "attribute" else raw_key
    op, value = clause.op.upper(), clause.value
    got = f"Got value {shown(raw_text(value))}"
    if op in _NULL_OPS:
        if entity not in {"tag", "parameter"}:
            raise invalid_parameter(
                "IS NULL / IS NOT NULL is only supported for tags and params, "
                f"not for '{entity}' '{shown(raw_key)}'"
            )
        return IsNull(entity=entity, key=key, negated=op == "IS NOT NULL")
    if entity == "metric":
        number = float(_numeric(value, "metric"))
        return NumberCompare(entity=entity, key=key, op=_number_op(op), value=number)
    if entity == "attribute" and raw_key in RUN_NUMERIC_ATTRIBUTES:
        number = _numeric(value, f"numeric attribute: {shown(raw_key)}")
        return NumberCompare(entity=entity, key=key, op=_number_op(op), value=number)
    if entity in {"parameter", "tag"}:
        text = _string(
            value, f"Expected a quoted string value for {entity} (e.g. 'my-value'). {got}"
        )
        _check_op(op, _KEY_VALUE_OPS)
        return _text_predicate(entity, key, op, text, is_list=False)
    is_list = value[0].kind == "lparen"
    if is_list and entity == "attribute" and key != "run_id":
        raise invalid_parameter(
            "Only ['run_id'] attributes support comparison with a list of quoted string values."
        )
    where = "attributes" if entity == "attribute" else "dataset attributes"
    items = (
        _string_list(value)
        if is_list
        else _string(value, f"Expected a quoted string value for {where}. {got}")
    )
    _check_op(op, _STRING_ATTRIBUTE_OPS)
    return _text_predicate(entity, key, op, items, is_list)


def _experiment_id(text: str) -> int:
    """Parse an experiment id as MLflow's int() does, bounded to PostgreSQL's bigint."""
    try:
        number = int(text)
    except ValueError:
        number = INT64_MAX + 1
    if not INT64_MIN <= number <= INT64_MAX:
        raise invalid_parameter(
            f"Invalid experiment ID '{shown(text)}'. Experiment ID must be a valid integer."
        )
    return number


def _experiment_predicate(clause: _Clause) -> Predicate:
    _require_identifier(clause)
    entity, key = experiment_identifier(clause.lhs, EXPERIMENT_ATTRIBUTES)
    op, value = clause.op.upper(), clause.value
    got = f"Got value {shown(raw_text(value))}"
    if op in _NULL_OPS:
        if entity != "tag":
            raise invalid_parameter(
                "IS NULL / IS NOT NULL is only supported for tags, "
                f"not for attribute '{shown(key)}'"
            )
        return IsNull(entity=entity, key=key, negated=op == "IS NOT NULL")
    if entity == "tag":
        text = _string(value, f"Expected a quoted string value for tag (e.g. 'my-value'). {got}")
        if op not in _TEXT_OPS:
            raise invalid_parameter(f"Invalid comparator for tag: {shown(op)}")
        return _text_predicate(entity, key, op, text, is_list=False)
    if key in EXPERIMENT_NUMERIC_ATTRIBUTES:
        number = _numeric(value, f"numeric attribute: {shown(key)}")
        _check_op(op, _NUMBER_OPS)
        if isinstance(number, float):
            raise invalid_parameter(
                f"Invalid value for numeric attribute '{shown(key)}': {shown(raw_text(value))!r}"
            )
        return NumberCompare(entity=entity, key=key, op=_number_op(op), value=number)
    is_list = value[0].kind == "lparen"
    if is_list and key != "experiment_id":
        raise invalid_parameter(
            "Only ['experiment_id'] attributes support comparison with a list of quoted "
            "string values."
        )
    items = (
        _string_list(value)
        if is_list
        else _string(value, f"Expected a quoted string value for attributes. {got}")
    )
    if key == "name":
        _check_op(op, _STRING_ATTRIBUTE_OPS)
        if op not in _TEXT_OPS:
            raise invalid_parameter(f"Invalid comparator for string attribute: {shown(op)}")
        return _text_predicate(entity, key, op, items, is_list)
    if op not in {"=", "!=", "IN", "NOT IN"}:
        raise invalid_parameter(f"Invalid comparator for experiment_id: {shown(op)}")
    if isinstance(items, tuple) and op in _LIST_OPS:
        ids = tuple(_experiment_id(v) for v in items)
        return InList(entity=entity, key=key, negated=op == "NOT IN", values=ids)
    if isinstance(items, str) and op not in _LIST_OPS:
        return NumberCompare(entity=entity, key=key, op=_number_op(op), value=_experiment_id(items))
    return _text_predicate(entity, key, op, items, is_list)  # raises: list/comparator mismatch


def parse_run_filter(filter_string: str | None) -> tuple[Predicate, ...]:
    """Parse a SearchRuns filter into predicates that must all hold."""
    if not filter_string:
        return ()
    return tuple(_run_predicate(clause) for clause in _clauses(filter_string))


def parse_experiment_filter(filter_string: str | None) -> tuple[Predicate, ...]:
    """Parse a SearchExperiments filter into predicates that must all hold."""
    if not filter_string:
        return ()
    return tuple(_experiment_predicate(clause) for clause in _clauses(filter_string))
