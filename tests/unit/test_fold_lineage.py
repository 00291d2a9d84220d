"""Lineage: root_run_id and depth depend only on the final parent graph, never on the order in
which partitions deliver, nor on how the log is cut into batches (decision 2)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fold_contract import Log

from ingest.events import Event
from projector.lineage import cycle_roots, lineage
from projector.memory import MemoryStore

RUNS = ["a", "b", "c", "d", "e", "f"]
Parents = dict[str, str | None]


def naive(parents: Parents) -> dict[str, tuple[str, int]]:
    """The rule written as a plain walk per run (the shape the SQL walk has)."""
    out = {}
    for run in parents:
        path = [run]
        while True:
            parent = parents[path[-1]]
            if parent is None or parent not in parents:
                out[run] = (path[-1], len(path) - 1)
                break
            if parent in path:
                root = min(path[path.index(parent) :])
                out[run] = (root, path.index(root))
                break
            path.append(parent)
    return out


graphs = st.dictionaries(
    st.sampled_from(RUNS), st.one_of(st.none(), st.sampled_from([*RUNS, "gone"])), min_size=1
)


@given(graphs)
def test_lineage_equals_the_plain_walk(parents: Parents) -> None:
    assert lineage(parents) == naive(parents)


def test_the_rule_on_examples() -> None:
    assert lineage({"c": "b", "b": "a", "a": None}) == {"a": ("a", 0), "b": ("a", 1), "c": ("a", 2)}
    assert lineage({"c": "b", "b": "a"}) == {"b": ("b", 0), "c": ("b", 1)}  # a never arrives
    assert lineage({"s": "s"}) == {"s": ("s", 0)}
    two = {"b": "a", "a": "b", "t": "b"}
    assert lineage(two) == {"a": ("a", 0), "b": ("a", 1), "t": ("a", 2)}
    three = {"x": "z", "z": "y", "y": "x", "w": "y"}
    assert cycle_roots(three) == {"x"}
    assert lineage(three) == {"x": ("x", 0), "y": ("x", 1), "z": ("x", 2), "w": ("x", 2)}


def per_run_events(
    log: Log, starts: Parents, relinks: dict[str, list[str | None]]
) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for run, parent in starts.items():
        events: list[Event] = [log.start(run, parent=parent)]
        for link in relinks.get(run, []):
            events.append(
                log.tag(run, "mlflow.parentRunId", link)
                if link
                else log.untag(run, "mlflow.parentRunId")
            )
        out[run] = events
    return out


def fold_in_batches(order: list[Event], cuts: list[int]) -> MemoryStore:
    store = MemoryStore()
    bounds = [0, *sorted(cuts), len(order)]
    for lo, hi in itertools.pairwise(bounds):
        store.fold_log(order[lo:hi])
    return store


@settings(max_examples=300)
@given(
    starts=graphs,
    relinks=st.dictionaries(
        st.sampled_from(RUNS),
        st.lists(st.one_of(st.none(), st.sampled_from([*RUNS, "gone"])), max_size=2),
    ),
    data=st.data(),
)
def test_any_interleaving_and_any_split_gives_the_rule(
    starts: Parents, relinks: dict[str, list[str | None]], data: st.DataObject
) -> None:
    per_run = per_run_events(Log(), starts, relinks)
    queues = {run: list(events) for run, events in per_run.items()}
    order: list[Event] = []
    while queues:
        run = data.draw(st.sampled_from(sorted(queues)))
        order.append(queues[run].pop(0))
        if not queues[run]:
            del queues[run]
    cuts = data.draw(st.lists(st.integers(0, len(order)), max_size=5))
    store = fold_in_batches(order, cuts)
    final = {run: (relinks.get(run) or [parent])[-1] for run, parent in starts.items()}
    expected = lineage(final)
    got = store.lineage_of()
    assert {run: (root, depth) for run, (_, root, depth) in got.items()} == expected
    assert {run: parent for run, (parent, _, _) in got.items()} == final
    assert {r: v for (r, k), v in store.tags.items() if k == "mlflow.rootRunId"} == {
        run: root for run, (root, _) in expected.items()
    }


@pytest.mark.parametrize("order", list(itertools.permutations(["a", "b", "c"])))
def test_three_levels_in_every_order(order: tuple[str, ...]) -> None:
    log = Log()
    parents = {"a": None, "b": "a", "c": "b"}
    store = MemoryStore()
    seen = []
    for run in order:
        store.fold_log([log.start(run, parent=parents[run])])
        seen.append(run)
        # In between, every run that exists is its own root until its parent arrives.
        assert {r: root for r, (_, root, _) in store.lineage_of().items()} == {
            r: root for r, (root, _) in lineage({s: parents[s] for s in seen}).items()
        }
    assert store.lineage_of() == {"a": (None, "a", 0), "b": ("a", "a", 1), "c": ("b", "a", 2)}


@pytest.mark.parametrize("order", list(itertools.permutations(["x", "y", "z"])))
def test_a_cycle_in_every_order(order: tuple[str, ...]) -> None:
    log = Log()
    parents = {"x": "z", "y": "x", "z": "y"}
    store = MemoryStore()
    for run in order:
        store.fold_log([log.start(run, parent=parents[run])])
    assert store.lineage_of() == {"x": ("z", "x", 0), "y": ("x", "x", 1), "z": ("y", "x", 2)}
