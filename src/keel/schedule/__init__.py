"""Distributed scheduling: cron, interval, date and delayed jobs that run once across a cluster."""

from keel.schedule._cron import CronExpression, parse_cron
from keel.schedule._triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    trigger_from_dict,
)
from keel.schedule.wheel import Timer, TimingWheel, WheelStatistics

__all__ = [
    "CronExpression",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "Timer",
    "TimingWheel",
    "Trigger",
    "WheelStatistics",
    "parse_cron",
    "trigger_from_dict",
]
