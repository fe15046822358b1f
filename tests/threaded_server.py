"""A real uvicorn server on a free loopback port, in a thread with its own event loop: what the
test doubles (fake MLflow, stand-in workspace, Apps edge, Apps APIs) and in-process fronts run on."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import uvicorn

START_TIMEOUT_SECONDS = 10.0


class ThreadedServer:
    """`app` served on 127.0.0.1; `around` (optional) is entered in the server's event loop for as
    long as it serves, for clients the app needs there (e.g. an httpx.AsyncClient)."""

    def __init__(self, app, name: str = "test-server", around: Callable[[], AbstractAsyncContextManager] | None = None, **config) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        options = {"log_config": None, "access_log": False, "lifespan": "off", "timeout_graceful_shutdown": 1, **config}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.name = name
        self.around = around
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        async def serve() -> None:
            if self.around is None:
                await self.server.serve(sockets=[self.socket])
                return
            async with self.around():
                await self.server.serve(sockets=[self.socket])

        # The event loop uvicorn itself would pick (uvloop when installed), as the front runs on.
        with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
            runner.run(serve())

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
        self.socket.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
