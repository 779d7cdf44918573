"""The launcher: start, supervise, restart and fault udpraft node processes.

    python -m launcher --nodes 3 --data-dir data            # a cluster on this machine
    python -m launcher --nodes 5 --chaos --seed 7 --duration-s 60

From Python (tests, tools.chaos):

    from launcher import ClusterSupervisor, SupervisorOptions, NemesisRunner
    with ClusterSupervisor(SupervisorOptions(data_dir=tmp, nodes=3, base_port=7001)) as sup:
        sup.wait_ready(); leader = sup.wait_leader()
        sup.kill(leader); sup.partition(["n1"]); sup.heal()

The launcher reaches nodes only through processes, signals, ports and files (it imports no
node code but ``udpraft.config``); ``launcher.nemesis`` is pure and seeded.
"""

from launcher.chaos import NemesisRunner
from launcher.cluster import ClusterSupervisor
from launcher.events import EventLog
from launcher.layout import LayoutError, plan_cluster
from launcher.nemesis import FaultAction, Timing, generate_schedule
from launcher.procs import NodeView, SupervisorOptions

__all__ = [
    "ClusterSupervisor",
    "EventLog",
    "FaultAction",
    "LayoutError",
    "NemesisRunner",
    "NodeView",
    "SupervisorOptions",
    "Timing",
    "generate_schedule",
    "plan_cluster",
]
