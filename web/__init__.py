"""Not imported by anything: this file makes ``web/`` the package ``gateway.web`` for the wheel build.

pyproject's ``package-dir`` maps ``gateway.web`` to this folder, which is how a wheel carries the admin
page's files inside the package (``gateway/web/``). At run time ``gateway.assets`` finds them by path, the
same way in a clone, a wheel, an editable install and the PyInstaller bundle.
"""
