"""The contract suite's routing tests, run on gevent:// (see conftest.py)."""

from tests.contract.test_routing import *  # noqa: F403
