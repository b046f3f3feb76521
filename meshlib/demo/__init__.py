"""``meshlib demo``: watch meshlib route around slow, failing and dead agents.

* :mod:`.run`: the main demo (:func:`run_demo`), HTTP agents with a scripted
  story, the gRPC pool beside them (:mod:`.grpc_pool`) and the circuit
  breaker's act (:mod:`.breaker`);
* :mod:`.registry`: ``meshlib demo --registry etcd|consul``
  (:func:`~meshlib.demo.registry.run_registry_demo`);
* :mod:`.view`: the live display (``rich`` when installed, plain otherwise).

Tests and scripts call :func:`run_demo`; the ``meshlib demo`` command is a thin
wrapper around it.
"""

from __future__ import annotations

from .report import AgentReport, DemoResult, Phase
from .run import run_demo
from .scenario import AgentSpec, Scenario
from .view import LiveView

__all__ = ["run_demo", "DemoResult", "AgentReport", "Phase", "Scenario", "AgentSpec", "LiveView"]
