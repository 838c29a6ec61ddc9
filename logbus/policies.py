"""A topology's policies on a broker: put there, read back and compared, through the management API.

What the policies are is :mod:`logbus.topology`'s (``bounds = "policy"``,
:func:`~logbus.topology.policies`); this module does the I/O, with the
:class:`~logbus.management.ManagementApi` client ``logbus status`` uses. AMQP cannot
set or list policies, so without the management API there is no way: the error
says so and names ``--management-url``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from logbus.management import ManagementApi, ManagementUnavailable, QueueState
from logbus.topology import POLICY_PREFIX, Policy

__all__ = [
    "NEEDS_API",
    "PolicyApplied",
    "apply_policies",
    "delete_policies",
    "policy_drift",
    "read_policies",
]

NEEDS_API = (
    "policies are set through RabbitMQ's management API (AMQP cannot), and it is off; "
    "name it with --management-url or LOGBUS_MANAGEMENT_URL"
)


@dataclass(frozen=True, slots=True)
class PolicyApplied:
    """One policy :func:`apply_policies` put: ``created``, ``updated`` or ``existed``."""

    name: str
    state: Literal["created", "updated", "existed"]
    policy: Policy

    def to_dict(self) -> dict[str, Any]:
        return {"entity": "policy", "name": self.name, "state": self.state} | self.policy.body()


def _path(vhost: str, name: str | None = None) -> str:
    path = f"/api/policies/{quote(vhost, safe='')}"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def read_policies(api: ManagementApi, vhost: str) -> dict[str, Mapping[str, Any]]:
    """The vhost's policies by name, each as the management API gives it."""
    found = api.get(_path(vhost))
    if not isinstance(found, list):
        raise ManagementUnavailable(f"the management API at {api} gave no list of policies")
    return {p["name"]: p for p in found if isinstance(p, Mapping) and "name" in p}


def _same(policy: Policy, have: Mapping[str, Any] | None) -> bool:
    if have is None:
        return False
    wanted = policy.body()
    return all(have.get(k) == v for k, v in wanted.items())


def apply_policies(
    api: ManagementApi, vhost: str, wanted: Sequence[Policy]
) -> tuple[PolicyApplied, ...]:
    """Put each of ``wanted`` on ``vhost`` (idempotent: one that is the same stays)."""
    have = read_policies(api, vhost) if wanted else {}
    out = []
    for policy in wanted:
        existing = have.get(policy.name)
        if _same(policy, existing):
            out.append(PolicyApplied(policy.name, "existed", policy))
            continue
        api.call("PUT", _path(vhost, policy.name), policy.body())
        state: Literal["created", "updated"] = "created" if existing is None else "updated"
        out.append(PolicyApplied(policy.name, state, policy))
    return tuple(out)


def delete_policies(api: ManagementApi, vhost: str, names: Iterable[str]) -> None:
    """Delete the named policies of ``vhost`` that exist."""
    have = read_policies(api, vhost)
    for name in names:
        if name in have:
            api.call("DELETE", _path(vhost, name))


def policy_drift(
    wanted: Sequence[Policy],
    have: Mapping[str, Mapping[str, Any]],
    queues: Mapping[str, QueueState] | None = None,
) -> tuple[str, ...]:
    """How the broker's policies (``have``, by name) differ from ``wanted``: a missing one,
    a property with another value, and (with ``queues``, the broker's) a queue that
    another policy governs, since RabbitMQ applies only one, the highest priority's."""
    out: list[str] = []
    for policy in wanted:
        got = have.get(policy.name)
        if got is None:
            out.append(f"policy '{policy.name}' is missing on the broker")
            continue
        for key, value in policy.body().items():
            if got.get(key) != value:
                config, broker = json.dumps(value), json.dumps(got.get(key))
                out.append(
                    f"policy '{policy.name}': {key} differs: config has {config}, "
                    f"broker has {broker}"
                )
        queue = policy.name.removeprefix(POLICY_PREFIX)
        state = (queues or {}).get(queue)
        if state is not None and state.policy is not None and state.policy != policy.name:
            out.append(
                f"queue '{queue}' is governed by policy '{state.policy}', not "
                f"'{policy.name}' (a higher priority wins; only one policy applies)"
            )
    return tuple(out)
