"""Real node processes for integration tests (see tools/localcluster.py)."""

from tools.localcluster import LocalCluster, free_ports, local_cluster

__all__ = ["LocalCluster", "free_ports", "local_cluster"]
