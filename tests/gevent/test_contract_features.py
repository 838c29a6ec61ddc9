"""The contract suite's feature tests (priorities, SAC, x-expires, AE, CC/BCC, delivery limit),
run on gevent:// (see conftest.py)."""

from tests.contract.test_features import *  # noqa: F403
