"""Declaration arguments of RabbitMQ's queue and exchange features, checked as RabbitMQ 3.10 does.

Priorities (``x-max-priority``), a single active consumer
(``x-single-active-consumer``), queue expiry (``x-expires``), the quorum
delivery limit (``x-delivery-limit``) and alternate exchanges
(``alternate-exchange``) are refused with RabbitMQ's 406 where RabbitMQ
refuses them: a wrong type, a value out of range, or a feature the queue type
does not have. The words after the queue's name are RabbitMQ's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from logbus.broker.priority import MAX_PRIORITY
from logbus.errors import PreconditionFailed

__all__ = ["amqp_type", "check_exchange_arguments", "check_feature_arguments"]


def amqp_type(value: Any) -> str:
    """The AMQP field-table type name RabbitMQ reports for a Python value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint"
    if isinstance(value, str | bytes):
        return "longstr"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return "void" if value is None else type(value).__name__


def _invalid(name: str, key: str, why: str) -> PreconditionFailed:
    return PreconditionFailed(
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': {why}"
    )


def _integer(name: str, key: str, value: Any, *, zero: bool = True) -> int:
    if type(value) is not int:
        raise _invalid(name, key, f'"expected integer, got {amqp_type(value)}"')
    if value < 0:
        raise _invalid(name, key, f"{{value_negative,{value}}}")
    if value == 0 and not zero:
        raise _invalid(name, key, f"{{value_zero,{value}}}")
    return value


def check_feature_arguments(name: str, args: Mapping[str, Any]) -> None:
    """Refuse the feature arguments of a new queue that RabbitMQ 3.10 refuses."""
    queue_type = "rabbit_quorum_queue" if args.get("x-queue-type") == "quorum" else None
    if "x-max-priority" in args:
        if queue_type is not None:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' "
                f"in vhost '/' of queue type {queue_type}"
            )
        value = _integer(name, "x-max-priority", args["x-max-priority"])
        if value > MAX_PRIORITY:
            raise _invalid(name, "x-max-priority", f"{{max_value_exceeded,{value}}}")
    if "x-expires" in args:
        _integer(name, "x-expires", args["x-expires"], zero=False)
    sac = args.get("x-single-active-consumer")
    if sac is not None and not isinstance(sac, bool):
        raise _invalid(name, "x-single-active-consumer", f"{{unacceptable_type,{amqp_type(sac)}}}")
    if "x-delivery-limit" in args and queue_type is None and args.get("x-queue-type") != "stream":
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{name}' "
            f"in vhost '/' of queue type rabbit_classic_queue"
        )


def check_exchange_arguments(name: str, args: Mapping[str, Any]) -> None:
    """Refuse an ``alternate-exchange`` that is not a string, as RabbitMQ does."""
    alternate = args.get("alternate-exchange")
    if alternate is not None and not isinstance(alternate, str):
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - invalid type '{amqp_type(alternate)}' for arg "
            f"'alternate-exchange' in exchange '{name}' in vhost '/'"
        )
