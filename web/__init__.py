"""The admin page's templates and static files, shipped as the package ``gateway.web``.

A regular package (not a bare folder) so ``importlib.resources.files("gateway.web")`` finds the files
the same way in a source checkout, an installed wheel and the PyInstaller bundle.
"""
