"""granian, set up the gateway's way: the app by import string, and SIGHUP reloads the config.

granian's own SIGHUP handling respawns every worker, which drops in-memory state (key ring, limits,
circuit breakers) and, if the edited config is broken, leaves workers crash-looping. The gateway's
workers reload the config themselves and keep serving the old one when the new one is invalid, so the
main process only passes the signal on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server.mp import MPServer


class GatewayServer(MPServer):
    def _reload(self, spawn_target: Any, target_loader: Any) -> None:
        self.reload_signal = False
        self.main_loop_interrupt.clear()
        for worker in self.wrks:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(worker._id(), signal.SIGHUP)  # type: ignore[no-untyped-call]


def run(host: str, port: int, workers: int) -> None:
    GatewayServer(
        "gateway.app:serve_app", address=host, port=port, interface=Interfaces.ASGI, workers=workers,
        factory=True, log_level=LogLevels.warning, log_access=False,
    ).serve()
