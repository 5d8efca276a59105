"""All runner work in one background thread with its own event loop.

The UI loop never runs engine code: model calls, saves, the embedding model's first load
(seconds of CPU) and llama.cpp all happen here. The UI submits coroutines and awaits their
results; the runner's events come back through a callback the UI marshals onto its loop.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable


class EngineThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="promptarbor-engine", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Awaitable[Any]) -> Any:
        """Run `coro` on the engine loop; await it from the UI loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def call(self, fn, *args) -> Any:
        """Run a plain function on the engine thread and wait for it (short work only)."""
        async def wrapper():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
