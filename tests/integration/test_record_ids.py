"""Record ids across a fork: drawn in blocks, never shared between parent and child."""

from __future__ import annotations

import os

from logbus.record import new_id


def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    """Ids are drawn in blocks; a child drops the block it inherited instead of reusing it."""
    new_id()  # the parent holds a block of ids now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, leave at once
        os.write(write, "".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    parent = "".join(new_id() for _ in range(3))
    assert len(child) == 96
    assert {child[i : i + 32] for i in range(0, 96, 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, 96, 32)}
    )
