"""Writes keel's Grafana dashboards (``*.json`` beside this file) from the panel lists below.

Run ``python deploy/grafana/build.py`` after editing a panel; the JSON files
are what operators import (Dashboards > New > Import, or provisioning). Every
panel queries the Prometheus data source chosen in the dashboard's
``datasource`` variable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(expr, legend)...], kind) per panel; kind: timeseries or stat.
Panel = tuple[str, str, list[tuple[str, str]], str]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "keel-overview": (
        "keel / Overview",
        [
            ("Requests per second by service", "reqps",
             [("sum by (service) (rate(keel_http_server_requests_total[5m]))", "{{service}}")], "timeseries"),
            ("Server error ratio by service", "percentunit",
             [("sum by (service) (rate(keel_http_server_requests_total{status=~\"5..\"}[5m])) / sum by (service) (rate(keel_http_server_requests_total[5m]))", "{{service}}")], "timeseries"),
            ("Store operations per second", "ops",
             [("sum by (store) (rate(keel_store_operations_total[5m]))", "{{store}}")], "timeseries"),
            ("Store errors per second", "ops",
             [("sum by (store, kind) (rate(keel_store_errors_total{kind!=\"CancelledError\"}[5m]))", "{{store}} {{kind}}")], "timeseries"),
            ("Open circuit breakers", "short",
             [("count(keel_resilience_state{policy=\"breaker\"} == 2) or vector(0)", "open")], "stat"),
            ("Sessions lost (1h)", "short",
             [("sum(increase(keel_session_lost_total[1h]))", "lost")], "stat"),
            ("Job lateness p99 by group", "s",
             [("histogram_quantile(0.99, sum by (group, le) (rate(keel_schedule_lateness_seconds_bucket[5m])))", "{{group}}")], "timeseries"),
            ("Discovered instances by service", "short",
             [("max by (service) (keel_discovery_instances)", "{{service}}")], "timeseries"),
        ],
    ),
    "keel-services": (
        "keel / Services (RED)",
        [
            ("Requests per second by route", "reqps",
             [("sum by (service, route) (rate(keel_http_server_requests_total[5m]))", "{{service}} {{route}}")], "timeseries"),
            ("Responses by status", "reqps",
             [("sum by (service, status) (rate(keel_http_server_requests_total[5m]))", "{{service}} {{status}}")], "timeseries"),
            ("Latency p50 / p99", "s",
             [("histogram_quantile(0.5, sum by (service, le) (rate(keel_http_server_request_duration_seconds_bucket[5m])))", "p50 {{service}}"),
              ("histogram_quantile(0.99, sum by (service, le) (rate(keel_http_server_request_duration_seconds_bucket[5m])))", "p99 {{service}}")], "timeseries"),
            ("In flight", "short",
             [("sum by (service) (keel_http_server_in_flight)", "{{service}}")], "timeseries"),
            ("Client calls by callee and status", "reqps",
             [("sum by (service, status) (rate(keel_http_client_requests_total[5m]))", "{{service}} {{status}}")], "timeseries"),
            ("Client retries", "ops",
             [("sum by (service) (rate(keel_http_client_retries_total[5m]))", "{{service}}")], "timeseries"),
            ("Breaker state (0 closed, 1 half-open, 2 open)", "short",
             [("max by (name) (keel_resilience_state{policy=\"breaker\"})", "{{name}}")], "timeseries"),
            ("Policy rejections", "ops",
             [("sum by (policy, name, reason) (rate(keel_resilience_rejections_total[5m]))", "{{policy}} {{name}} {{reason}}")], "timeseries"),
            ("Retries", "ops",
             [("sum by (name) (rate(keel_resilience_calls_total{policy=\"retry\",outcome=\"retried\"}[5m]))", "{{name}}")], "timeseries"),
            ("Admission waits p99 (limiters, bulkheads)", "s",
             [("histogram_quantile(0.99, sum by (policy, name, le) (rate(keel_resilience_wait_seconds_bucket[5m])))", "{{policy}} {{name}}")], "timeseries"),
            ("Balancer picks", "ops",
             [("sum by (balancer) (rate(keel_balancer_picks_total[5m]))", "{{balancer}}")], "timeseries"),
            ("Outlier ejections and ejected now", "short",
             [("sum(increase(keel_balancer_ejections_total[5m]))", "ejections (5m)"),
              ("sum(keel_balancer_ejected)", "ejected now")], "timeseries"),
            ("Health probes by result", "ops",
             [("sum by (check, result) (rate(keel_health_probes_total[5m]))", "{{check}} {{result}}")], "timeseries"),
            ("Config rejected by bindings", "short",
             [("sum by (config) (increase(keel_config_reloads_total{outcome=\"invalid\"}[1h]))", "{{config}}")], "timeseries"),
        ],
    ),
    "keel-store": (
        "keel / Store",
        [
            ("Operations per second", "ops",
             [("sum by (store, operation) (rate(keel_store_operations_total[5m]))", "{{store}} {{operation}}")], "timeseries"),
            ("Latency p99 by operation", "s",
             [("histogram_quantile(0.99, sum by (store, operation, le) (rate(keel_store_operation_duration_seconds_bucket[5m])))", "{{store}} {{operation}}")], "timeseries"),
            ("Errors by kind", "ops",
             [("sum by (store, operation, kind) (rate(keel_store_errors_total[5m]))", "{{store}} {{operation}} {{kind}}")], "timeseries"),
            ("Watches open", "short",
             [("sum by (store) (keel_store_watches)", "{{store}}")], "timeseries"),
            ("Watch events and backlog", "short",
             [("sum by (store) (rate(keel_store_watch_events_total[5m]))", "events/s {{store}}"),
              ("sum by (store) (keel_store_watch_backlog)", "backlog {{store}}")], "timeseries"),
            ("Watch delay p99 (delivery to consumer)", "s",
             [("histogram_quantile(0.99, sum by (store, le) (rate(keel_store_watch_delay_seconds_bucket[5m])))", "{{store}}")], "timeseries"),
            ("Watch lag p99 (revisions behind the newest commit)", "short",
             [("histogram_quantile(0.99, sum by (store, le) (rate(keel_store_watch_lag_revisions_bucket[5m])))", "{{store}}")], "timeseries"),
            ("etcd endpoint in use", "short",
             [("max by (instance, endpoint) (keel_store_endpoint) == 1", "{{instance}} -> {{endpoint}}")], "timeseries"),
            ("etcd failovers", "short",
             [("sum by (instance) (increase(keel_store_failovers_total[15m]))", "{{instance}}")], "timeseries"),
            ("sqlite group commit size (mean)", "short",
             [("sum(rate(keel_store_commit_group_size_sum[5m])) / sum(rate(keel_store_commit_group_size_count[5m]))", "writes per commit")], "timeseries"),
            ("sqlite commit latency p99", "s",
             [("histogram_quantile(0.99, sum by (le) (rate(keel_store_commit_seconds_bucket[5m])))", "p99")], "timeseries"),
            ("Malformed records skipped", "short",
             [("sum by (area) (increase(keel_records_rejected_total[15m]))", "{{area}}")], "timeseries"),
        ],
    ),
    "keel-coordination": (
        "keel / Coordination",
        [
            ("Sessions open", "short",
             [("sum by (store) (keel_sessions)", "{{store}}")], "timeseries"),
            ("Keepalive latency p99", "s",
             [("histogram_quantile(0.99, sum by (store, le) (rate(keel_session_keepalive_seconds_bucket[5m])))", "{{store}}")], "timeseries"),
            ("Keepalive failures and sessions lost", "short",
             [("sum by (store) (increase(keel_session_keepalive_failures_total[5m]))", "failures {{store}}"),
              ("sum by (store) (increase(keel_session_lost_total[5m]))", "lost {{store}}")], "timeseries"),
            ("Held now", "short",
             [("sum by (kind) (keel_coord_held)", "{{kind}}")], "timeseries"),
            ("Time to acquire p99", "s",
             [("histogram_quantile(0.99, sum by (kind, le) (rate(keel_coord_acquire_seconds_bucket[5m])))", "{{kind}}")], "timeseries"),
            ("Longest current hold", "s",
             [("max by (kind) (keel_coord_longest_hold_seconds)", "{{kind}}")], "timeseries"),
            ("Ownerships lost", "short",
             [("sum by (kind) (increase(keel_coord_lost_total[15m]))", "{{kind}}")], "timeseries"),
            ("Registry events", "short",
             [("sum by (service, event) (increase(keel_registry_events_total[5m]))", "{{service}} {{event}}")], "timeseries"),
        ],
    ),
    "keel-scheduler": (
        "keel / Scheduler",
        [
            ("Runs by outcome", "ops",
             [("sum by (outcome) (rate(keel_schedule_runs_total[5m]))", "{{outcome}}")], "timeseries"),
            ("Failing jobs (15m)", "short",
             [("topk(10, sum by (job) (increase(keel_schedule_runs_total{outcome=~\"failed|timed_out\"}[15m])))", "{{job}}")], "timeseries"),
            ("Lateness p50 / p99", "s",
             [("histogram_quantile(0.5, sum by (group, le) (rate(keel_schedule_lateness_seconds_bucket[5m])))", "p50 {{group}}"),
              ("histogram_quantile(0.99, sum by (group, le) (rate(keel_schedule_lateness_seconds_bucket[5m])))", "p99 {{group}}")], "timeseries"),
            ("Run duration p99", "s",
             [("histogram_quantile(0.99, sum by (group, le) (rate(keel_schedule_duration_seconds_bucket[5m])))", "{{group}}")], "timeseries"),
            ("Fires by result", "short",
             [("sum by (group, result) (increase(keel_schedule_fires_total[5m]))", "{{group}} {{result}}")], "timeseries"),
            ("Leading planner", "short",
             [("sum by (group) (keel_schedule_leading)", "{{group}}")], "stat"),
        ],
    ),
}


def panel(index: int, spec: Panel) -> dict[str, Any]:
    """One Grafana panel (two per row, 12 units wide, 8 high)."""
    title, unit, queries, kind = spec
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    """A whole dashboard with a Prometheus data-source variable."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["keel"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": [panel(i, p) for i, p in enumerate(panels)],
    }


def main() -> None:
    """Write every dashboard as ``<uid without keel->.json``."""
    for uid, (title, panels) in DASHBOARDS.items():
        path = HERE / f"{uid.removeprefix('keel-')}.json"
        path.write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")


if __name__ == "__main__":
    main()
