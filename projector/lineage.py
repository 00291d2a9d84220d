"""The lineage rule: root_run_id and depth as a pure function of the final parent graph.

A run's parent link is ``RunStarted.parent_run_id``, later changed by a ``TagSet``/``TagDeleted``
of mlflow.parentRunId. Lineage follows only links to runs that exist, so:

* a run whose parent has not arrived (or never arrives) is its own root with depth 0; when the
  parent arrives its whole subtree hangs below it;
* every run has at most one parent, so each connected part of the graph holds at most one cycle
  (a -> b -> a, a self-link, or longer). **Cycle rule:** the run with the smallest run_id on the
  cycle (smallest by code point, which is PostgreSQL's ``COLLATE "C"`` order) is treated as a
  root: its link is ignored for root_run_id and depth, while its ``parent_run_id`` column still
  shows the link. Runs hanging off a cycle (tails) lead to that root like any other ancestor.

Both inputs - which runs exist and each run's final link - are per-run facts folded in each run's
own log order, so the result is the same for every interleaving of partitions. The PostgreSQL
store recomputes the same rule incrementally (``projector.store``); this module is the reference.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Lineage", "cycle_roots", "lineage"]

Lineage = dict[str, tuple[str, int]]


def cycle_roots(parents: Mapping[str, str | None]) -> set[str]:
    """Return the run chosen as root on each cycle of the links between existing runs."""
    state: dict[str, int] = {}  # absent: unseen; 1: on the current walk; 2: done
    roots: set[str] = set()
    for start in parents:
        if start in state:
            continue
        walk: list[str] = []
        node: str | None = start
        while node is not None and node in parents and node not in state:
            state[node] = 1
            walk.append(node)
            node = parents[node]
        if node is not None and state.get(node) == 1:
            cycle = walk[walk.index(node) :]
            roots.add(min(cycle))
        for seen in walk:
            state[seen] = 2
    return roots


def lineage(parents: Mapping[str, str | None]) -> Lineage:
    """Return run_id -> (root_run_id, depth) for every existing run.

    ``parents`` maps every run that exists to its parent link (which may name a missing run).
    """
    broken = cycle_roots(parents)
    result: Lineage = {}
    for start in parents:
        if start in result:
            continue
        walk: list[str] = []
        node = start
        while True:
            known = result.get(node)
            if known is not None:
                root, depth = known
                break
            walk.append(node)
            parent = None if node in broken else parents[node]
            if parent is None or parent not in parents:
                root, depth = node, 0
                walk.pop()
                result[node] = (root, depth)
                break
            node = parent
        for below in reversed(walk):
            depth += 1
            result[below] = (root, depth)
    return result
