"""Lex MLflow search strings and resolve their identifiers; shared by filters and order_by.

The lexer is our own (no sqlparse) but its quoting regexes are sqlparse's, so quoted keys and
values read exactly as in MLflow. It never fails and never recurses: characters it does not know
become `other` tokens that the parsers reject with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ingest.errors import invalid_parameter

Entity = Literal["metric", "parameter", "tag", "attribute", "dataset"]

RUN_ENTITIES: list[Entity] = ["metric", "parameter", "tag", "attribute", "dataset"]
_RUN_SPELLINGS: tuple[tuple[Entity, str], ...] = (
    ("metric", "metric metrics"),
    ("parameter", "parameter parameters param params"),
    ("tag", "tag tags"),
    ("attribute", "attribute attributes attr run"),
    ("dataset", "dataset datasets"),
)
_RUN_ENTITY_ALIASES = {word: entity for entity, words in _RUN_SPELLINGS for word in words.split()}
# MLflow's experiment search takes exactly these spellings, and trims no backticks off them.
_EXPERIMENT_ENTITY_ALIASES: dict[str, Entity] = {
    "attribute": "attribute",
    "tag": "tag",
    "tags": "tag",
}
KEY_ALIASES = {
    "created": "start_time",
    "Created": "start_time",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}
RUN_ATTRIBUTES = frozenset(
    {"run_id", "run_name", "user_id", "status", "start_time", "end_time", "artifact_uri"}
)
RUN_NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time", "created", "Created"})
RUN_SEARCH_ATTRIBUTES = RUN_ATTRIBUTES | KEY_ALIASES.keys()
# MLflow orders by `created` but not by the `run name` spellings.
RUN_ORDER_ATTRIBUTES = RUN_ATTRIBUTES | {"created", "Created"}
DATASET_KEYS = frozenset({"name", "digest", "context"})
EXPERIMENT_NUMERIC_ATTRIBUTES = frozenset({"creation_time", "last_update_time"})
EXPERIMENT_ATTRIBUTES = frozenset({"name", "experiment_id"}) | EXPERIMENT_NUMERIC_ATTRIBUTES
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# No alternative can backtrack past its own token, so lexing stays linear in the input.
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<sq>'(?:''|\\'|[^'])*')
    |(?P<dq>"(?:""|\\"|[^"])*")
    |(?P<bt>`(?:``|[^`])*`)
    |(?P<num>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w$#]))
    |(?P<name>\w[\w$#]*)
    |(?P<dot>\.)
    |(?P<op>[<>=~!]+)
    |(?P<lparen>\()|(?P<rparen>\))|(?P<comma>,)|(?P<semi>;)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_NAME = re.compile(r"\w[\w$#]*")
HEADS = frozenset({"name", "bt", "dq"})
_PARTS = frozenset({"name", "bt", "dq", "sq"})


@dataclass(frozen=True, slots=True)
class Token:
    """One lexeme: its kind, its exact text and whether whitespace came before it."""

    kind: str
    text: str
    spaced: bool

    @property
    def word(self) -> str:
        """Return the upper-cased text of a name token, '' for any other kind."""
        return self.text.upper() if self.kind == "name" else ""


def check_text(text: str, what: str) -> None:
    """Reject text PostgreSQL cannot bind: NUL characters and unpaired surrogates."""
    if "\x00" in text:
        raise invalid_parameter(f"Invalid {what}: NUL characters are not allowed.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_parameter(f"Invalid {what}: it is not valid Unicode.") from None


def tokenize(text: str) -> list[Token]:
    """Split text into tokens without the whitespace; unknown characters become `other`."""
    tokens: list[Token] = []
    pos, spaced = 0, True
    while pos < len(text):
        prev = tokens[-1] if tokens else None
        name = _NAME.match(text, pos) if prev and prev.kind == "dot" and not spaced else None
        if name is not None:  # a key segment after a dot, even one that looks like `1e5`
            kind, end = "name", name.end()
        elif text[pos] == "." and prev and prev.kind in _PARTS and not spaced:
            kind, end = "dot", pos + 1  # a member access, not the float `.5`
        else:
            match = _TOKEN.match(text, pos)
            # `other` matches any single character, so there is always a match
            kind, end = (match.lastgroup or "other", match.end()) if match else ("other", pos + 1)
        if kind == "ws":
            spaced = True
        else:
            tokens.append(Token(kind, text[pos:end], spaced))
            spaced = False
        pos = end
    return tokens


def raw_text(tokens: list[Token]) -> str:
    """Return the tokens' text, each run of whitespace between them shown as one space."""
    return "".join((" " if i and t.spaced else "") + t.text for i, t in enumerate(tokens))


def shown(text: str, limit: int = 200) -> str:
    """Return text cut to `limit` characters for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def quoted(text: str, mark: str) -> bool:
    """Return whether text is wrapped in the given quote character."""
    return len(text) >= 2 and text[0] == mark and text[-1] == mark


def strip_quotes(text: str) -> str:
    """Remove one pair of surrounding single or double quotes, as MLflow does."""
    return text[1:-1] if quoted(text, "'") or quoted(text, '"') else text


def unquote_key(text: str) -> str:
    """Remove surrounding quotes, then surrounding backticks, from a key."""
    text = strip_quotes(text)
    return text[1:-1] if quoted(text, "`") else text


def read_identifier(tokens: list[Token], start: int) -> int:
    """Return the end of the dotted identifier at `start`, or `start` when there is none."""
    if start >= len(tokens) or tokens[start].kind not in HEADS:
        return start
    end = start + 1
    while (
        end + 1 < len(tokens)
        and tokens[end].kind == "dot"
        and not tokens[end].spaced
        and tokens[end + 1].kind in _PARTS
        and not tokens[end + 1].spaced
    ):
        end += 2
    return end


def set_text(values: Iterable[str]) -> str:
    """Render a set of names as MLflow's messages print one, but in a stable order."""
    return "{" + ", ".join(repr(v) for v in sorted(values)) + "}"


def _split(tokens: list[Token]) -> tuple[str | None, str]:
    """Split an identifier at its first dot into its raw type and its unquoted key."""
    raw = raw_text(tokens)
    if len(tokens) == 1:
        return None, unquote_key(raw)
    head = tokens[0].text
    return head, unquote_key(raw[len(head) + 1 :])


def _check_key(entity: Entity, key: str, valid_attributes: frozenset[str]) -> None:
    if entity == "attribute" and key not in valid_attributes:
        raise invalid_parameter(
            f"Invalid attribute key '{shown(key)}' specified. "
            f"Valid keys are '{set_text(valid_attributes)}'"
        )
    if entity == "dataset" and key not in DATASET_KEYS:
        raise invalid_parameter(
            f"Invalid dataset key '{shown(key)}' specified. "
            f"Valid keys are '{set_text(DATASET_KEYS)}'"
        )


def run_identifier(tokens: list[Token], valid_attributes: frozenset[str]) -> tuple[Entity, str]:
    """Resolve a run identifier to (entity, key), rejecting it with MLflow's messages."""
    head, key = _split(tokens)
    entity: Entity = "attribute"
    if head is not None:
        head = head[1:-1] if quoted(head, "`") else head
        found = _RUN_ENTITY_ALIASES.get(head)
        if found is None:
            raise invalid_parameter(
                f"Invalid entity type '{shown(head)}'. Valid values are {RUN_ENTITIES}"
            )
        entity = found
    _check_key(entity, key, valid_attributes)
    return entity, key


def experiment_identifier(
    tokens: list[Token], valid_attributes: frozenset[str]
) -> tuple[Entity, str]:
    """Resolve an experiment identifier to (entity, key), rejecting it with MLflow's messages."""
    head, key = _split(tokens)
    entity: Entity = "attribute"
    if head is not None:
        found = _EXPERIMENT_ENTITY_ALIASES.get(head)
        if found is None:
            raise invalid_parameter(
                f"Invalid entity type '{shown(head)}'. "
                "Valid entity types are ('attribute', 'tag', 'tags')"
            )
        entity = found
    _check_key(entity, key, valid_attributes)
    return entity, key
