"""The contract suite's queue-semantics tests (issue 15), run on gevent:// (see conftest.py)."""

from tests.contract.test_queue_semantics import *  # noqa: F403
