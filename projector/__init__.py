"""Fold the event topic into the PostgreSQL read models.

Layers, one way: ``ops`` (the write operations) <- ``fold`` (pure: events -> ops), ``lineage``
(the pure lineage rule), ``memory`` (the in-memory reference store), ``snapshot`` (canonical
state and its hash) <- ``store`` (+ ``store_entities``, ``store_values``, ``store_lineage``:
asyncpg) <- ``batch``, ``assignment``, ``bound``, ``deadletter``, ``consumer`` (aiokafka) <-
``service`` (``run_projector``).
"""
