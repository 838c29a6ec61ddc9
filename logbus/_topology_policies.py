"""The RabbitMQ policies a topology asks for: its queues' bounds, dead-lettering and TTLs.

RabbitMQ advises setting these through policies rather than x-arguments: a policy
can change without deleting the queue, and every client may declare the queue with
plain flags — the RabbitMQ tutorials' clients declare ``task_queue`` with none of
logbus's arguments and would meet PRECONDITION_FAILED otherwise. A queue with
``bounds = "policy"`` is declared without those arguments (see
:meth:`~logbus.topology.Queue.amqp_arguments`) and gets one :class:`Policy` of its
own: named ``logbus-<queue>``, matching exactly that queue's name, applied to
queues only. Putting policies on a broker goes through the management API
(:mod:`logbus.policies`); this module only says what they are, without I/O.

Priority :data:`POLICY_PRIORITY` (10): RabbitMQ applies only the highest-priority
policy that matches a queue, so a logbus policy outranks a catch-all (``.*`` at 0)
for its own queue, and yields to one an operator gave a higher priority
(``logbus topology diff --policies`` then names the policy that governs the queue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logbus.topology import Queue, Topology

__all__ = [
    "POLICY_ARGUMENTS",
    "POLICY_PREFIX",
    "POLICY_PRIORITY",
    "Policy",
    "policies",
    "policy_for",
    "with_policies",
]

#: The x-arguments a policy can carry instead, and their names in a policy's definition.
POLICY_ARGUMENTS = {
    "x-max-length": "max-length",
    "x-max-length-bytes": "max-length-bytes",
    "x-overflow": "overflow",
    "x-message-ttl": "message-ttl",
    "x-expires": "expires",
    "x-dead-letter-exchange": "dead-letter-exchange",
    "x-dead-letter-routing-key": "dead-letter-routing-key",
    "x-dead-letter-strategy": "dead-letter-strategy",
    "x-delivery-limit": "delivery-limit",
}
#: Every logbus policy's name starts so: ``logbus-<queue name>``.
POLICY_PREFIX = "logbus-"
#: Above a catch-all policy (0), below what an operator raises on purpose.
POLICY_PRIORITY = 10


@dataclass(frozen=True, slots=True)
class Policy:
    """One RabbitMQ policy, as the management API takes it (``PUT /api/policies/...``)."""

    name: str
    pattern: str
    definition: dict[str, Any] = field(hash=False)
    priority: int = POLICY_PRIORITY
    apply_to: str = "queues"

    def body(self) -> dict[str, Any]:
        """The JSON the management API takes and gives back for this policy."""
        return {
            "pattern": self.pattern,
            "definition": dict(self.definition),
            "priority": self.priority,
            "apply-to": self.apply_to,
        }

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.definition.items()))
        return (
            f"policy {self.name}: pattern {self.pattern} apply-to {self.apply_to} "
            f"priority {self.priority}: {settings}"
        )


def policy_for(queue: Queue) -> Policy | None:
    """The policy a queue with ``bounds = "policy"`` needs; None when it needs none."""
    if queue.bounds != "policy":
        return None
    args = queue.all_arguments()
    definition = {POLICY_ARGUMENTS[k]: v for k, v in args.items() if k in POLICY_ARGUMENTS}
    if not definition:
        return None
    # Anchored and escaped: a policy pattern is a regular expression over queue names,
    # and "logbus.tasks" unescaped would also match "logbusXtasks.retry".
    return Policy(f"{POLICY_PREFIX}{queue.name}", f"^{re.escape(queue.name)}$", definition)


def policies(topology: Topology) -> tuple[Policy, ...]:
    """Every policy the topology's queues ask for, in the order of its queues."""
    return tuple(p for q in topology.queues if (p := policy_for(q)) is not None)


def with_policies(topology: Topology) -> Topology:
    """``topology`` with every queue's bounds in a policy (``--policies``); exclusive
    queues keep theirs: they live only with their connection, which nobody else shares."""
    queues = tuple(
        q if q.exclusive or q.bounds == "policy" else replace(q, bounds="policy")
        for q in topology.queues
    )
    return replace(topology, queues=queues)
