"""The demo's script: which agents there are and what happens to them when.

Shared by the HTTP agents (:mod:`.agents`) and the gRPC pool (:mod:`.grpc_pool`),
so both tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AgentSpec", "Scenario", "behaviour", "FAST", "SLOW", "FAILING", "DOWN", "SPECIAL_ROLES", "mesh_state"]

FAST_LATENCY = 0.003  # seconds of "work" per request on a fast agent
SLOW_FACTOR = 10
FAIL_AT = 0.4  # fraction of the run after which the failing agent answers errors
DOWN_AT = 0.6  # fraction of the run after which the down agent is gone

#: Agent roles, in the order the special ones are appended after the fast ones.
FAST, SLOW, FAILING, DOWN = "fast", "slow", "failing", "down"
SPECIAL_ROLES = (SLOW, FAILING, DOWN)


@dataclass(frozen=True)
class AgentSpec:
    """One scripted agent: its name, role and time (in seconds since the
    traffic started) at which its role kicks in, if any."""

    name: str
    role: str
    latency: float
    at: float | None = None

    def describe(self) -> str:
        if self.role == SLOW:
            return f"{SLOW_FACTOR}x slower"
        if self.role == FAILING:
            return f"503 from t={self.at:.1f}s"
        if self.role == DOWN:
            return f"down from t={self.at:.1f}s"
        return "fast"


@dataclass(frozen=True)
class Scenario:
    """The agents of a run and what happens to them."""

    agents: tuple[AgentSpec, ...]
    duration: float

    @classmethod
    def build(cls, n_agents: int, duration: float) -> "Scenario":
        """``max(1, n - 3)`` fast agents, then (as far as ``n`` allows) one
        slow, one that starts failing and one that goes down.

        Five agents tell the whole story: agent-1 and agent-2 fast, agent-3
        slow, agent-4 failing at 40% of the run, agent-5 down at 60%.
        """
        if n_agents < 1:
            raise ValueError("the demo needs at least one agent")
        roles = [FAST] * max(1, n_agents - len(SPECIAL_ROLES)) + list(SPECIAL_ROLES)
        specs = []
        for i, role in enumerate(roles[:n_agents], start=1):
            latency = FAST_LATENCY * (SLOW_FACTOR if role == SLOW else 1)
            at = {FAILING: FAIL_AT * duration, DOWN: DOWN_AT * duration}.get(role)
            specs.append(AgentSpec(f"agent-{i}", role, latency, at))
        return cls(tuple(specs), duration)

    def by_role(self, role: str) -> list[AgentSpec]:
        return [a for a in self.agents if a.role == role]

    def events(self) -> list[AgentSpec]:
        """Agents whose behaviour changes during the run, in time order."""
        return sorted((a for a in self.agents if a.at is not None), key=lambda a: a.at or 0.0)


def behaviour(spec: AgentSpec, down_at: float | None, t: float) -> str:
    """An agent's scripted state at ``t`` seconds: up, slow, failing or down."""
    if down_at is not None and t >= down_at:
        return "down"
    if spec.role == SLOW:
        return "slow"
    if spec.role == FAILING and spec.at is not None and t >= spec.at:
        return "failing"
    return "up"


def mesh_state(endpoint: "dict[str, object] | None") -> str:
    """What meshlib knows of an endpoint (from ``mesh.stats()``), in one word.

    ``ejected`` and ``unhealthy`` as the mesh reports them; ``failing`` when its
    latest attempts failed (a refused connection, an error answer) but it has
    not been ejected (yet); ``healthy`` only when its last attempt succeeded.
    """
    if not endpoint:
        return "?"
    state = str(endpoint.get("state", "?"))
    if state != "healthy":
        return state
    streak = max(int(endpoint.get(k, 0) or 0) for k in ("consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure"))  # type: ignore[call-overload]
    return "failing" if streak else "healthy"
