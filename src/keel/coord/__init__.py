"""Coordination recipes over the store: the Session today; locks and elections build on it.

Everything here is written against :mod:`keel.store` only, so it runs on every
backend.
"""

from keel.coord._flag import LossFlag
from keel.coord._session import Session, SessionStatistics, next_step

__all__ = ["LossFlag", "Session", "SessionStatistics", "next_step"]
