"""Helpers shared by the Pilot tests: wait for a condition, wait for the workbench."""
import time

from promptarbor.tui.screens.workbench import WorkbenchScreen


async def wait_for(pilot, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if predicate():
            return
    raise AssertionError("condition not reached in time")


async def open_workbench(pilot, settle: float = 0.0) -> WorkbenchScreen:
    """The workbench once its session is loaded (then `settle` more seconds of drawing)."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, WorkbenchScreen)
                   and pilot.app.screen.snap is not None)
    if settle:
        await pilot.pause(settle)
    return pilot.app.screen
