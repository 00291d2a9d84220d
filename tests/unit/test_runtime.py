"""What a serving process does to itself once its roles are up."""

from __future__ import annotations

import gc

from services.runtime import freeze_startup_objects


def test_objects_alive_at_startup_leave_the_collectors_reach() -> None:
    gc.unfreeze()
    startup = [[index] for index in range(10_000)]  # stand-ins for modules, pools, routes
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen >= len(startup)
        # a full collection no longer walks them: they are not in any generation
        assert not any(any(o is startup[0] for o in gc.get_objects(g)) for g in range(3))
    finally:
        gc.unfreeze()
