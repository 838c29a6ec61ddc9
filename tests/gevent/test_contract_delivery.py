"""The contract suite's delivery tests, run on gevent:// (see conftest.py)."""

from tests.contract.test_delivery import *  # noqa: F403
