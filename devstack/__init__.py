"""A real local stack without Docker: Kafka (KRaft), Apicurio Registry and s3proxy on loopback.

Used by ``ketenstroom infra up|down|status`` and by the integration-test fixtures::

    from devstack import Stack, StackConfig

    stack = Stack(StackConfig.from_env(nodes=1))   # nodes=3: a three-node KRaft cluster
    endpoints = stack.up(progress=print)            # fetch if needed, start, wait healthy
    os.environ.update(endpoints.as_env())

Downloads go to ``<cache>/dist`` (Maven Central via ``mvn``), runtime state to ``<cache>/run``; the
cache is ``$KETENSTROOM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ketenstroom``, else
``~/.cache/ketenstroom``. The registry and s3proxy are shared by the single and the cluster stack.
"""

from devstack.config import Endpoints, ServiceStatus, StackConfig
from devstack.stack import Stack

__all__ = ["Endpoints", "ServiceStatus", "Stack", "StackConfig"]
