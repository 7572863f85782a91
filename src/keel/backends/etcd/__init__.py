"""The etcd backend: keel's store contract on a real etcd v3 cluster.

keel owns its gRPC channels (TLS, several endpoints with failover, one watch
stream and one keepalive stream per connection) and uses aetcd only for
etcd's generated wire types; see :mod:`._channel` for why and for the retry
rule. Obtain a store with ``await keel.connect("etcd://host:port,...")``.
"""

from keel.backends.etcd._channel import EtcdStatistics
from keel.backends.etcd._settings import EtcdSettings
from keel.backends.etcd._store import EtcdStore, open_etcd

__all__ = ["EtcdSettings", "EtcdStatistics", "EtcdStore", "open_etcd"]
