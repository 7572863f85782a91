"""The canary controller: one elected per store, it drives every analysed gray release.

Only the leader of the ``config/canary-controller`` election acts (the same
shape as the registry's health checker). Each tick it reads the canary
records; for each running canary whose evaluation is due it reads the gray
clients' and main clients' reports (and the PromQL value, if any), evaluates
(:func:`~keel.config.evaluate`), decides (:func:`decide`) and writes the
outcome in ONE transaction guarded by its leadership, the canary record's
revision and the gray record's revision. So:

- a deposed controller cannot write (its leadership guard fails);
- a manual promote or abort always wins (it changes the records the
  controller's write is guarded by);
- a new controller resumes from the recorded step (all state is in the record);
- a store outage pauses the analysis: nothing is read, nothing is decided,
  and the next tick after the store is back evaluates afresh (the deadline
  still holds: a canary never runs past it undecided).

Client reports are untrusted records: malformed ones are skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, replace

import httpx

from keel._records import Rejected, decode, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.config._analysis import evaluate
from keel.config._canary import Canary, CanaryEntry, canary_log_key, decide
from keel.config._gray_api import promote_gray
from keel.config._model import ClientReport, GrayRelease, GrayRule, gray_key
from keel.config._promql import query_value
from keel.coord import Election, Leadership, Session
from keel.errors import ConflictError, KeelError
from keel.store import Compare, Delete, KeyValue, Op, Put, Store

__all__ = ["CanaryController", "ControllerStatistics"]

log = logging.getLogger("keel.config.canary")
ELECTION = "config/canary-controller"
CANARIES = "config-canary/"


@dataclass(frozen=True, slots=True)
class ControllerStatistics:
    """What a controller did so far.

    Attributes:
        evaluations: evaluations written.
        decisions: advances, promotions and rollbacks written.
        rejected: malformed records skipped (canaries and client reports).
        paused: ticks skipped because the store could not be read or written.
        lost_races: writes refused because a record changed (a manual decision).
    """

    evaluations: int
    decisions: int
    rejected: int
    paused: int
    lost_races: int


class CanaryController:
    """Campaign for the controller role; while leader, evaluate and decide every canary.

    Use ``await controller.run()`` (until cancelled) inside ``async with Session(...)``.

    Args:
        session: the session to campaign on.
        node: this controller's name (shown as the leader and in decisions).
        clock: time source (wall time for records, sleeps between ticks).
        tick_s: how often to look for due evaluations (each canary is evaluated
            on its own ``interval_s``).
        retention: history versions kept when it promotes.
    """

    def __init__(
        self,
        session: Session,
        *,
        node: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 1.0,
        retention: int = 100,
    ) -> None:
        self.session = session
        self.store: Store = session.store
        self.node = node or f"{socket.gethostname()}-{id(self):x}"
        self.tick_s = tick_s
        self.retention = retention
        self._clock = clock
        self._counts = dict.fromkeys(
            ("evaluations", "decisions", "rejected", "paused", "lost_races"), 0
        )
        self.leading = asyncio.Event()

    def statistics(self) -> ControllerStatistics:
        """Counters of what this controller did."""
        return ControllerStatistics(**self._counts)

    async def run(self) -> None:
        """Lead and drive canaries; campaign again after losing leadership; stop when cancelled."""
        election = Election(self.session, ELECTION)
        while not self.session.lost.is_set():
            async with election.campaign(self.node) as leadership:
                log.info(
                    "canary controller %s leads (token %s)", self.node, leadership.fencing_token
                )
                self.leading.set()
                work = asyncio.ensure_future(self._lead(leadership))
                lost = asyncio.ensure_future(leadership.lost.wait())
                try:
                    await asyncio.wait([work, lost], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self.leading.clear()
                    work.cancel()
                    lost.cancel()
                    with contextlib.suppress(asyncio.CancelledError, KeelError):
                        await work

    async def _lead(self, leadership: Leadership) -> None:
        paused = False
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            while True:
                try:
                    await self.tick(leadership, http)
                except KeelError as exc:  # the store is away: no data, no decision
                    if not paused:
                        log.warning("canary analysis paused (store unavailable: %s)", exc)
                    self._counts["paused"] += 1
                    paused = True
                else:
                    if paused:
                        log.info("canary analysis resumed")
                    paused = False
                await self._clock.sleep(self.tick_s)

    async def tick(self, leadership: Leadership, http: httpx.AsyncClient) -> None:
        """Evaluate every running canary that is due (one pass)."""
        kvs, _ = await self.store.range(CANARIES)
        for kv in kvs:
            canary = decode("config", kv.key, kv.value, Canary.decode)
            if isinstance(canary, Rejected):
                report(canary)
                self._counts["rejected"] += 1
                continue
            due = canary.last_evaluated_at + canary.analysis.interval_s
            now = self._clock.time()
            if canary.status == "running" and (now >= due or now >= canary.deadline_at):
                await self._drive(kv, canary, leadership, http)

    async def _drive(
        self, kv: KeyValue, canary: Canary, leadership: Leadership, http: httpx.AsyncClient
    ) -> None:
        name = canary.name
        guards = [leadership.guard(), Compare.mod_revision(kv.key, "==", kv.mod_revision)]
        gray_kv = await self.store.get(gray_key(name))
        gray = self._gray(gray_kv)
        if gray_kv is None or gray is None or gray.md5 != canary.gray_md5:
            await self._end_orphan(kv, canary, guards, gray_kv if gray is None else None)
            return
        gray_reports, main_reports = await self._reports(name, canary.gray_md5)
        value, why = (None, "")
        if canary.analysis.prometheus is not None:
            value, why = await query_value(http, canary.analysis.prometheus)
        now = self._clock.time()
        result = evaluate(canary.analysis, gray_reports, main_reports, value, why)
        action, reason = decide(canary, result, now)
        entry = CanaryEntry(
            at=now,
            step=canary.step,
            kind=result.verdict,
            reasons=result.reasons,
            evidence=result.evidence,
            by=self.node,
        )
        evaluated = canary.evaluated(entry)
        self._counts["evaluations"] += 1
        if action == "wait":
            await self._write(guards, [Put(kv.key, evaluated.encode())], name, "evaluation")
            return
        decision = CanaryEntry(
            at=now,
            step=canary.step,
            kind=action,
            reasons=(reason,),
            evidence=result.evidence,
            by=self.node,
        )
        log_put = Put(canary_log_key(name, now, action), decision.encode())
        guards.append(Compare.mod_revision(gray_kv.key, "==", gray_kv.mod_revision))
        if action == "advance":
            step = canary.step + 1
            moved = evaluated.decided(decision, step=step, step_started_at=now)
            rule = GrayRule(ids=gray.rule.ids, labels=gray.rule.labels, percent=moved.percent)
            regray = replace(gray, rule=rule)
            ops: list[Op] = [Put(gray_kv.key, regray.encode()), Put(kv.key, moved.encode())]
            await self._write(guards, [*ops, log_put], name, f"advance to {moved.percent:g}%")
        elif action == "abort":
            ended = evaluated.decided(decision, status="aborted")
            ops = [Delete(gray_kv.key), Put(kv.key, ended.encode()), log_put]
            await self._write(guards, ops, name, f"rollback ({reason})")
        else:
            await self._promote(
                kv, evaluated.decided(decision, status="promoted"), gray_kv, guards, log_put, reason
            )

    async def _promote(
        self,
        kv: KeyValue,
        ended: Canary,
        gray_kv: KeyValue,
        guards: list[Compare],
        log_put: Put,
        reason: str,
    ) -> None:
        try:
            doc = await promote_gray(
                self.store,
                self.retention,
                ended.name,
                gray_kv,
                author=f"canary-controller {self.node}",
                comment=f"canary promoted: {reason}"[:500],
                guards=guards,
                extra=(Put(kv.key, ended.encode()), log_put),
            )
        except ConflictError as exc:
            self._counts["lost_races"] += 1
            log.info("canary %s: promote not written (%s)", ended.name, exc)
            return
        self._counts["decisions"] += 1
        log.info("canary %s: promoted as version %s", ended.name, doc.version)

    async def _write(self, guards: list[Compare], ops: list[Op], name: str, what: str) -> None:
        result = await self.store.txn(guards, ops)
        if not result.succeeded:
            self._counts["lost_races"] += 1
            log.info("canary %s: %s not written (changed meanwhile)", name, what)
            return
        if what != "evaluation":
            self._counts["decisions"] += 1
            log.info("canary %s: %s", name, what)

    def _gray(self, kv: KeyValue | None) -> GrayRelease | None:
        if kv is None:
            return None
        gray = decode("config", kv.key, kv.value, GrayRelease.decode)
        if isinstance(gray, Rejected):
            report(gray)
            self._counts["rejected"] += 1
            return None
        return gray

    async def _reports(
        self, name: str, md5: str
    ) -> tuple[dict[str, ClientReport], dict[str, ClientReport]]:
        kvs, _ = await self.store.range(f"config-clients/{name}/")
        gray: dict[str, ClientReport] = {}
        main: dict[str, ClientReport] = {}
        for kv in kvs:
            client = decode("config", kv.key, kv.value, ClientReport.decode)
            if isinstance(client, Rejected):
                report(client)
                self._counts["rejected"] += 1
                continue
            if client.healthy is None:
                continue  # no health check: it cannot vouch either way
            who = kv.key.rsplit("/", 1)[1]
            if client.gray and client.md5 == md5:
                gray[who] = client
            elif not client.gray:
                main[who] = client
        return gray, main

    async def _end_orphan(
        self, kv: KeyValue, canary: Canary, guards: list[Compare], bad_gray: KeyValue | None
    ) -> None:
        """The gray went away, was replaced, or became unreadable: end the canary.

        An unreadable gray record is deleted with it (its clients would keep
        the last gray they could read), so every client returns to the main.
        """
        now = self._clock.time()
        why = (
            "the gray record is malformed: removed, clients back on the main version"
            if bad_gray is not None
            else "the gray release was removed or replaced outside the canary"
        )
        entry = CanaryEntry(at=now, step=canary.step, kind="abort", reasons=(why,), by=self.node)
        ended = canary.decided(entry, status="aborted")
        ops: list[Op] = [Put(kv.key, ended.encode())]
        ops.append(Put(canary_log_key(canary.name, now, "abort"), entry.encode()))
        if bad_gray is not None:
            guards = [*guards, Compare.mod_revision(bad_gray.key, "==", bad_gray.mod_revision)]
            ops.append(Delete(bad_gray.key))
        await self._write(guards, ops, canary.name, "ended (gray gone)")

    def __repr__(self) -> str:
        c = self._counts
        state = "leading" if self.leading.is_set() else "standby"
        return f"<CanaryController {self.node} {state} evaluations={c['evaluations']}>"
