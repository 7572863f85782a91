"""Helpers for testing code that uses keel.

- :class:`FakeClock`: a :class:`keel.clock.Clock` whose time moves only when a
  test says so, so timeouts, backoffs and lease expiry are checked without
  waiting for them.
- :class:`EtcdCluster`: real etcd processes on free loopback ports, for tests
  and benchmarks (Debian's ``etcd-server``).
- :class:`RedisServer`: a real ``redis-server`` on a free loopback port.
- :class:`RedisCluster`: a real 3-master Redis Cluster on free loopback ports.
- :class:`PostgresServer`: a real PostgreSQL (Debian's ``postgresql``) on a free loopback port.
- :class:`PrometheusServer`: a real Prometheus (Debian's ``prometheus``) scraping test targets.
"""

from keel.testing._clock import FakeClock
from keel.testing._etcd import EtcdCluster, EtcdTLS
from keel.testing._ports import free_port
from keel.testing._postgres import PostgresServer
from keel.testing._prometheus import PrometheusServer
from keel.testing._redis import RedisServer
from keel.testing._redis_cluster import RedisCluster

__all__ = [
    "EtcdCluster",
    "EtcdTLS",
    "FakeClock",
    "PostgresServer",
    "PrometheusServer",
    "RedisCluster",
    "RedisServer",
    "free_port",
]
