"""The console's pages, one module each (see :mod:`keel.console._pages` for the interface)."""
