"""How the person at the terminal started the gateway, so the commands it suggests can be pasted back.

The single executable is typically run as ``./gateway`` or ``dist/gateway``; the console script as
``gateway`` (found on PATH); the module as ``python3 -m gateway``. A hint that says ``gateway keys
create`` to someone who typed ``./gateway`` fails with "command not found".
"""

from __future__ import annotations

import os
import shutil
import sys


def program() -> str:
    """The command prefix to show in hints and in ``--help``'s usage line."""
    typed = sys.argv[0] if sys.argv and sys.argv[0] else "gateway"
    if not getattr(sys, "frozen", False) and os.path.basename(typed) == "__main__.py":
        # python3 -m gateway: the interpreter as it was typed, without its folder.
        interpreter = os.path.basename(sys.orig_argv[0]) if sys.orig_argv else ""
        return f"{interpreter or 'python3'} -m gateway"
    name = os.path.basename(typed)
    # A program found on PATH arrives as its full path; the user typed only its name.
    if os.sep in typed and shutil.which(name) == os.path.abspath(typed):
        return name
    return typed
