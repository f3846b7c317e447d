"""Where the gateway's own files are: ``web/`` (the admin page's templates and static files) and
``data/`` (model catalog, example config).

Both are found by path from this package's folder, never by importing a package. ``python -m gateway``
run from a clone puts the clone first on ``sys.path``, so the source ``gateway/`` is the one imported even
when a wheel is installed: an import-based lookup of ``gateway.web`` (a name that exists only through
pyproject's ``package-dir`` mapping) found nothing there and the server died at start. One rule serves
every layout:

- installed wheel and PyInstaller bundle: ``web/`` ships inside the package, as ``gateway/web/``;
- source tree and editable install: the package is the clone's ``gateway/`` and ``web/`` is its sibling.

``data/`` is inside the package folder in every layout (a wheel build copies the file the example
config's symlink points to; the bundle's spec copies it too), so ``importlib.resources.files("gateway")``
(catalog.py, init.py) finds it by path as well.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def find_web(package: Path = PACKAGE) -> Path:
    """The ``web/`` folder for a package folder: inside it (wheel, bundle), else beside it (clone)."""
    candidates = (package / "web", package.parent / "web")
    for candidate in candidates:
        # A marker file, not just a folder named web: beside an installed package lies site-packages,
        # where another distribution's top-level ``web`` must not be mistaken for ours.
        if (candidate / "templates" / "base.html").is_file():
            return candidate
    raise FileNotFoundError("the admin page's files (web/templates, web/static) are missing: looked in "
                            + " and ".join(str(c) for c in candidates))


WEB = find_web()
