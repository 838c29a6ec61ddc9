"""Emit targets that say whether they must reach a queue, and which of several took a record.

On the in-process broker (``memory://``): no network. The RabbitMQ side is in
``tests/e2e/test_joining.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logbus.cli.emit import partly_routed
from logbus.emitter import AsyncEmitter, Emitter, PartlyRouted, pick_targets
from logbus.errors import ConfigError, InvalidTopology, Unroutable
from logbus.topology import (
    Binding,
    EmitTarget,
    Exchange,
    Queue,
    Topology,
    default,
    dumps,
    load,
    loads,
)
from logbus.transports import connect

REPO = Path(__file__).resolve().parents[2]


def four_targets(prefix: str) -> Topology:
    """Four fanout exchanges, each an emit target; only the first has a queue bound."""
    names = [f"{prefix}{n}" for n in ("a", "b", "c", "d")]
    return Topology(
        exchanges=tuple(Exchange(name=n, type="fanout") for n in names),
        queues=(Queue(name=f"{prefix}qa", durable=False),),
        bindings=(Binding(source=names[0], destination=f"{prefix}qa"),),
        emit=tuple(EmitTarget(exchange=n) for n in names),
    )


def test_a_target_is_mandatory_unless_it_says_otherwise() -> None:
    """mandatory defaults to true; a file may say false; dumps writes only the false."""
    topo = loads(
        '[[exchanges]]\nname = "x"\ntype = "topic"\n\n'
        '[[emit]]\nexchange = "x"\n\n'
        '[[emit]]\nexchange = "x"\nkey = "{severity}"\nmandatory = false\nname = "sev"\n'
    )
    assert [t.mandatory for t in topo.emit] == [True, False]
    assert [t.label for t in topo.emit] == ["x", "sev"]
    text = dumps(topo)
    assert text.count("mandatory = false") == 1 and "mandatory = true" not in text
    assert loads(text) == topo


def test_the_default_topology_keeps_its_work_queue_target_mandatory() -> None:
    """The built-in default and config/logbus.toml: one target, mandatory."""
    for topo in (default(), load(REPO / "config" / "logbus.toml")):
        assert [(t.exchange, t.mandatory) for t in topo.emit] == [("logbus.topic", True)]


def test_the_tutorial_config_makes_only_the_work_queue_mandatory() -> None:
    """config/tutorial.toml: the tutorial exchanges may have nobody listening; task_queue not."""
    topo = load(REPO / "config" / "tutorial.toml")
    assert {t.label: t.mandatory for t in topo.emit} == {
        "logs": False,
        "direct_logs": False,
        "topic_logs": False,
        "task_queue": True,
    }


def test_a_target_label_is_its_name_else_exchange_else_queue() -> None:
    """label: name, else the exchange, else the default exchange's key (a queue name)."""
    assert EmitTarget(exchange="x", name="audit").label == "audit"
    assert EmitTarget(exchange="x").label == "x"
    assert EmitTarget(exchange="", key="jobs").label == "jobs"


def test_two_targets_called_alike_are_refused_on_their_line() -> None:
    """Two targets on one exchange need names, or --target could not tell them apart."""
    text = (
        '[[exchanges]]\nname = "x"\ntype = "topic"\n\n'
        '[[emit]]\nexchange = "x"\n\n'
        '[[emit]]\nexchange = "x"\nkey = "{severity}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        loads(text, source="t.toml")
    said = str(caught.value)
    assert said.startswith("t.toml:8: ")
    assert "two emit targets are both called 'x'" in said and "name" in said


@pytest.mark.parametrize("name", ["", " ", "a,b"])
def test_a_target_name_must_be_a_word_for_the_command_line(name: str) -> None:
    """An empty name or one with a comma (--target splits on commas) is refused."""
    with pytest.raises(InvalidTopology, match="not a usable name"):
        EmitTarget(exchange="x", name=name)


@pytest.mark.parametrize("value", ["yes", 1])
def test_mandatory_is_a_boolean(value: object) -> None:
    """mandatory = "yes" or 1 is refused, as every flag is."""
    with pytest.raises(InvalidTopology, match="mandatory"):
        EmitTarget(exchange="x", mandatory=value)  # type: ignore[arg-type]


def test_an_unroutable_target_that_is_not_mandatory_is_fine() -> None:
    """Only a topic exchange, nobody bound: mandatory=false emits; the default raises."""
    exchange = Exchange(name="only.topic", type="topic")
    quiet = Topology(
        exchanges=(exchange,), emit=(EmitTarget(exchange="only.topic", mandatory=False),)
    )
    loud = Topology(exchanges=(exchange,), emit=(EmitTarget(exchange="only.topic"),))
    with connect("memory://") as transport:
        Emitter(topology=quiet, transport=transport).emit("kern.info", "nobody listens")
        with pytest.raises(Unroutable):
            Emitter(topology=loud, transport=transport).emit("kern.info", "nobody listens")


def test_a_partly_routed_emit_names_the_targets_and_a_retry_reaches_only_the_missing() -> None:
    """Four targets, three unroutable: the error lists which took the record; after binding
    queues to the three, emitting to exc.missed gives every queue exactly one copy."""
    topo = four_targets("p.")
    with connect("memory://") as transport:
        emitter = Emitter(topology=topo, transport=transport)
        with pytest.raises(PartlyRouted) as caught:
            emitter.emit("kern.critical", "disk failed")
        exc = caught.value
        assert [t.label for t in exc.taken] == ["p.a"]
        assert [t.label for t in exc.missed] == ["p.b", "p.c", "p.d"]
        assert set(exc.errors) == {"p.b", "p.c", "p.d"}
        assert "taken by p.a; not by p.b, p.c, p.d" in str(exc)
        for name in ("b", "c", "d"):
            transport.declare_queue(f"p.q{name}", durable=False)
            transport.bind_queue(f"p.q{name}", f"p.{name}")
        again = Emitter(topology=topo, transport=transport, targets=exc.missed)
        again.emit("kern.critical", "disk failed")
        depths = {n: transport.declare_queue(f"p.q{n}", passive=True).message_count for n in "abcd"}
    assert depths == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_mandatory_and_optional_targets_mixed() -> None:
    """A non-mandatory target that nobody takes is neither taken nor missed: no error."""
    topo = four_targets("m.")
    relaxed = Topology(
        exchanges=topo.exchanges,
        queues=topo.queues,
        bindings=topo.bindings,
        emit=(
            topo.emit[0],
            *(EmitTarget(exchange=t.exchange, mandatory=False) for t in topo.emit[1:]),
        ),
    )
    with connect("memory://") as transport:
        sent = Emitter(topology=relaxed, transport=transport).emit_many(
            [("user.info", "one"), ("user.info", "two")]
        )
        assert sent == 2
        assert transport.declare_queue("m.qa", passive=True).message_count == 2


def test_pick_targets_keeps_the_topology_order_and_names_unknown_ones() -> None:
    """pick_targets finds by label in the targets' order; an unknown name lists the known."""
    targets = four_targets("k.").emit
    assert [t.label for t in pick_targets(targets, ["k.d", "k.b"])] == ["k.b", "k.d"]
    with pytest.raises(ConfigError) as caught:
        pick_targets(targets, ["k.b", "nope"])
    assert "no emit target called 'nope'" in str(caught.value)
    assert "k.a, k.b, k.c, k.d" in str(caught.value)


def test_the_command_line_says_how_to_send_to_the_missing_targets_only() -> None:
    """logbus emit's line after a partly routed emit ends with a --target per missing one."""
    targets = four_targets("c.").emit
    missing = {t: Unroutable("no queue", exchange=t.exchange, routing_key="k") for t in targets[1:]}
    line = partly_routed(PartlyRouted(targets[:1], missing))
    assert "\n" not in line
    assert line.startswith("the record was not taken by every emit target: taken by c.a; ")
    assert line.endswith("emit again with --target c.b --target c.c --target c.d")


def test_a_batch_partly_routed_says_how_many_records() -> None:
    """Of a batch, the error counts the records concerned and those that went everywhere."""
    targets = four_targets("n.").emit
    exc = PartlyRouted(
        targets[:2],
        {targets[2]: Unroutable("x", exchange="n.c", routing_key="")},
        records=40,
        sent=5000,
    )
    assert str(exc).startswith("after 5000 records every target took, 40 records were not taken")
    assert [t.label for t in exc.taken] == ["n.a", "n.b"]


def test_the_async_emitter_takes_targets_too() -> None:
    """AsyncEmitter(targets=...) publishes where it is told, as Emitter does."""
    topo = four_targets("s.")
    emitter = AsyncEmitter("memory://", topology=topo, targets=topo.emit[:1])
    assert [t.label for t in emitter.targets] == ["s.a"]


def test_explicit_targets_must_have_distinct_names() -> None:
    """Emitter(targets=...) with two targets called alike is refused: no report could
    say which of them took a record."""
    twice = [EmitTarget(exchange="x"), EmitTarget(exchange="x", key="{severity}")]
    with pytest.raises(ConfigError, match="emit targets share a name"):
        Emitter("memory://", topology=Topology(), targets=twice)
