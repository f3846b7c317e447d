"""Finding a homelab's local model server when nothing else is configured.

With no config file and no provider key in the environment, an Ollama server answering on its default
address becomes the provider ``ollama`` (OpenAI-compatible, at ``/v1``), with the models it lists
itself. The probe is one short HTTP call at start; nothing else in the gateway talks to the network
outside ``upstream``, which is why this uses the standard library and a tight timeout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

OLLAMA_URL = "http://127.0.0.1:11434"
PROBE_TIMEOUT = 0.3


def ollama_models(base: str = OLLAMA_URL, timeout: float = PROBE_TIMEOUT) -> list[str] | None:
    """The models of a local Ollama server, or None when none answers."""
    try:
        with urllib.request.urlopen(f"{base}/api/tags", timeout=timeout) as response:
            listing = json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
        return None
    return [m["name"] for m in listing["models"] if isinstance(m, dict) and isinstance(m.get("name"), str)]
