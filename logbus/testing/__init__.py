"""logbus.testing: what logbus's own test suite knows, for the tests of services built on it.

The pytest plugin (:mod:`logbus.testing.plugin`, loaded by pytest through
logbus's ``pytest11`` entry point) gives every test session the fixtures
``logbus_broker_url``, ``logbus_inprocess_url``, ``logbus_capture`` and
``logbus_capture_url``. Without pytest, :class:`Capture` catches the records a
piece of code publishes and :func:`find_rabbitmq` finds a broker to test against.

Importing this package is cheap (it loads with every pytest run): names are
imported from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logbus.testing.capture import Capture, prefixed
    from logbus.testing.rabbitmq import find_rabbitmq, probe

__all__ = ["Capture", "find_rabbitmq", "prefixed", "probe"]

_LAZY = {
    "Capture": "logbus.testing.capture",
    "prefixed": "logbus.testing.capture",
    "find_rabbitmq": "logbus.testing.rabbitmq",
    "probe": "logbus.testing.rabbitmq",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logbus.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
