#!/usr/bin/env bash
# Make sure the real engines the tests start are installed: etcd (server and
# etcdctl), redis-server, postgresql, chromium (the console's browser tests) and
# prometheus (promtool and a real server for the alert rules and canary analysis),
# from Debian's packages; with --bench also nginx and wrk (the gateway
# benchmark's peer and load generator). Installs them with apt-get when running
# as root; otherwise says what to run.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# PostgreSQL's server binaries live under /usr/lib/postgresql/<major>/bin, not on PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# Playwright drives Debian's Chromium (a browser download needs the network).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Alert rules are checked with promtool; canary analysis queries a real Prometheus.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ "${1:-}" = "--bench" ]; then
  command -v nginx >/dev/null 2>&1 || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
fi
# The partition tests (root only: they make network namespaces) cut links with iptables.
if [ "$(id -u)" -eq 0 ]; then
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "keel: the tests need ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}' and retry." >&2
  exit 2
fi
echo "keel: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the services it installs; the tests start their own on free ports.
for svc in etcd redis-server postgresql nginx prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
