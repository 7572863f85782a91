"""The console's pages, one module each (see :mod:`keel.console._pages` for the interface)."""

__all__: list[str] = []
