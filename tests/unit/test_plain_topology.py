"""The light topology check (logbus._plain_topology) agrees with the pydantic models."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from logbus import _plain_topology as plain
from logbus.cli.emit import _targets
from logbus.topology import Topology, declare, default, dumps

REPO = Path(__file__).resolve().parents[2]


def dumped(topology: plain.PlainTopology) -> dict[str, Any]:
    """The plain topology in ``Topology.model_dump()`` form."""
    return {
        "exchanges": tuple(topology.exchanges),
        "queues": tuple(topology.queues),
        "bindings": tuple(topology.bindings),
        "emit": tuple(topology.emit),
    }


class Recorder:
    """A transport that only writes down what it is asked to declare."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def declare_exchange(self, name: str, type: str, **kw: Any) -> None:
        self.calls.append(("exchange", name, type, kw["durable"], kw["auto_delete"],
                           kw["internal"], kw["arguments"]))  # fmt: skip

    def declare_queue(self, name: str, **kw: Any) -> None:
        self.calls.append(("queue", name, kw["durable"], kw["exclusive"], kw["auto_delete"],
                           kw["arguments"]))  # fmt: skip

    def bind_exchange(self, destination: str, source: str, key: str, arguments: Any) -> None:
        self.calls.append(("bind_exchange", destination, source, key, arguments))

    def bind_queue(self, queue: str, exchange: str, key: str, arguments: Any) -> None:
        self.calls.append(("bind_queue", queue, exchange, key, arguments))


def planned(topology: plain.PlainTopology) -> list[tuple[Any, ...]]:
    """The light declarations, as the Recorder would have written them down."""
    out: list[tuple[Any, ...]] = []
    for kind, item in plain.declarations(topology):
        if kind == "exchange":
            out.append((kind, item["name"], item["type"], item["durable"], item["auto_delete"],
                        item["internal"], item["arguments"]))  # fmt: skip
        elif kind == "queue":
            out.append((kind, item["name"], item["durable"], item["exclusive"],
                        item["auto_delete"], item["arguments"]))  # fmt: skip
        else:
            out.append((kind, item["destination"], item["source"], item["routing_key"],
                        item["arguments"]))  # fmt: skip
    return out


def full_plan(model: Topology) -> list[tuple[Any, ...]]:
    """What `logbus emit` (the typer command) declares for this topology."""
    _, needed = _targets(model, None, None)
    recorder = Recorder()
    declare(recorder, needed)  # type: ignore[arg-type]
    return recorder.calls


def test_default_is_the_default_topology() -> None:
    """DEFAULT is logbus.topology.default(), field for field."""
    assert dumped(plain.DEFAULT) == default().model_dump()


def test_the_shipped_config_file_is_accepted_and_equal() -> None:
    """config/logbus.toml passes the light check and equals the models' reading."""
    data = tomllib.loads((REPO / "config" / "logbus.toml").read_text())
    checked = plain.plain_topology(data)
    assert checked is not None
    assert dumped(checked) == Topology.model_validate(data).model_dump()


def test_default_declarations_are_what_logbus_emit_declares() -> None:
    """The default topology's plan: 4 exchanges, the work queue, 4 bindings, in declare order."""
    assert planned(plain.DEFAULT) == full_plan(default())
    assert [kind for kind, _item in plain.declarations(plain.DEFAULT)] == [
        *["exchange"] * 4,
        "queue",
        *["bind_exchange"] * 3,
        "bind_queue",
    ]


def test_a_dumped_topology_without_floats_reads_back_equal() -> None:
    """A topology using most fields, written by dumps(), is accepted and equal."""
    data = {
        "exchanges": [
            {"name": "t", "type": "topic"},
            {"name": "dlx", "type": "fanout", "durable": False, "auto_delete": True},
            {"name": "in", "type": "headers", "internal": True,
             "arguments": {"alternate-exchange": "t"}},
        ],
        "queues": [
            {"name": 'q ü "quoted"', "queue_type": "quorum", "max_length": 5,
             "overflow": "drop-head", "message_ttl": 60_000, "dead_letter_exchange": "dlx",
             "dead_letter_routing_key": "dead", "arguments": {"x-delivery-limit": 3}},
            {"name": "temp", "durable": False, "exclusive": True, "auto_delete": True},
        ],
        "bindings": [
            {"source": "t", "destination": "in", "destination_type": "exchange",
             "routing_key": "#"},
            {"source": "in", "destination": "temp",
             "arguments": {"x-match": "any", "host": "web1"}},
        ],
        "emit": [{"exchange": "t"}, {"exchange": "", "key": "temp"},
                 {"exchange": "t", "key": "{{{app}}}.{host}"}],
    }  # fmt: skip
    model = Topology.model_validate(data)
    checked = plain.plain_topology(tomllib.loads(dumps(model)))
    assert checked is not None
    assert dumped(checked) == model.model_dump()
    assert planned(checked) == full_plan(model)


def test_what_the_models_refuse_is_not_vouched_for() -> None:
    """Refused data gives None: the typer command then reports it, with file and line."""
    ok_exchange = {"name": "x", "type": "topic"}
    for data in (
        {"exchanges": [{"name": "x", "type": "bogus"}]},
        {"exchanges": [{"name": "amq.x", "type": "topic"}]},
        {"exchanges": [{"name": "", "type": "topic"}]},
        {"exchanges": [ok_exchange, ok_exchange]},
        {"exchanges": [{"name": "x", "type": "topic", "durable": "yes"}]},
        {"exchanges": [ok_exchange], "emit": [{"exchange": "x", "key": "{nope}"}]},
        {"exchanges": [ok_exchange], "emit": [{"exchange": "y"}]},
        {"queues": [{"name": "q", "queue_type": "quorum", "exclusive": True}]},
        {"queues": [{"name": "q", "max_length": -1}]},
        {"queues": [{"name": "q", "max_length": 1, "arguments": {"x-max-length": 2}}]},
        {"queues": [{"name": "q", "dead_letter_routing_key": "k"}]},
        {"queues": [{"name": "q", "dead_letter_exchange": "missing"}]},
        {"bindings": [{"source": "", "destination": "q"}]},
        {"emit": [{"exchange": "", "key": "no-such-queue"}]},
        {"unknown": []},
    ):
        assert plain.plain_topology(data) is None, data
        try:
            Topology.model_validate(data)
        except ValidationError:
            continue
        raise AssertionError(f"the models accept {data}")


def test_what_the_light_check_cannot_vouch_for_goes_to_the_models() -> None:
    """Floats and nested values in arguments are left to the full path, even if valid."""
    data = {"exchanges": [{"name": "x", "type": "topic", "arguments": {"f": 1.5}}]}
    assert plain.plain_topology(data) is None
    Topology.model_validate(data)


# -- generated topologies -----------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "amq.x", ""])
ANY = st.one_of(st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x", "a", "#"]), st.none())
ARGS = st.dictionaries(
    st.sampled_from(["x-max-length", "x-dead-letter-exchange", "x-queue-type", "k"]),
    st.one_of(
        st.integers(0, 3),
        st.sampled_from(["a", "", "quorum"]),
        st.booleans(),
        st.floats(0, 1),
        st.lists(st.integers(), max_size=1),
    ),
    max_size=2,
)


def table(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    return st.fixed_dictionaries(required, optional=optional)


EXCHANGE = table(
    {"name": NAMES, "type": st.sampled_from(["topic", "fanout", "direct", "headers", "x", 1])},
    {"durable": ANY, "auto_delete": st.booleans(), "internal": st.booleans(), "arguments": ARGS},
)
QUEUE = table(
    {"name": NAMES},
    {
        "durable": st.booleans(),
        "exclusive": st.booleans(),
        "auto_delete": ANY,
        "arguments": ARGS,
        "queue_type": st.sampled_from(["classic", "quorum", "other", 1]),
        "max_length": st.one_of(st.integers(-1, 5), st.just(True), st.just("5")),
        "overflow": st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx", "x"]),
        "message_ttl": st.integers(-1, 5),
        "dead_letter_exchange": st.one_of(NAMES, st.just(3)),
        "dead_letter_routing_key": st.sampled_from(["k", ""]),
    },
)
BINDING = table(
    {"source": NAMES, "destination": NAMES},
    {
        "destination_type": st.sampled_from(["queue", "exchange", "x"]),
        "routing_key": st.one_of(st.sampled_from(["#", "", "a.*"]), st.just(1)),
        "arguments": ARGS,
    },
)
EMIT = table(
    {"exchange": st.one_of(NAMES, st.just(1))},
    {
        "key": st.sampled_from(
            ["{facility}.{severity}", "{severity}", "a", "b", "{x}", "{", "{{a}}"]
        )
    },
)
TOPOLOGY = table(
    {},
    {
        "exchanges": st.lists(EXCHANGE, max_size=3),
        "queues": st.lists(QUEUE, max_size=2),
        "bindings": st.lists(BINDING, max_size=3),
        "emit": st.lists(EMIT, max_size=2),
        "extra": st.just([]),
    },
)


@settings(max_examples=1500, deadline=None)
@given(TOPOLOGY)
def test_whatever_the_light_check_accepts_the_models_accept_and_read_alike(data: Any) -> None:
    """Generated data: light acceptance implies model acceptance, equal values, equal plan."""
    checked = plain.plain_topology(data)
    if checked is None:
        return
    model = Topology.model_validate(data)
    assert dumped(checked) == model.model_dump()
    assert planned(checked) == full_plan(model)


@settings(max_examples=300, deadline=None)
@given(TOPOLOGY)
def test_valid_plain_data_is_accepted(data: Any) -> None:
    """Data the models accept is accepted too unless it holds what the check leaves alone."""
    try:
        model = Topology.model_validate(data)
    except ValidationError:
        return
    simple = all(
        type(v) in (str, bool, int)
        for section in ("exchanges", "queues", "bindings")
        for item in data.get(section, [])
        for v in item.get("arguments", {}).values()
    )
    if simple:
        checked = plain.plain_topology(data)
        assert checked is not None
        assert dumped(checked) == model.model_dump()


@st.composite
def connected(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid topologies whose emit targets reach queues through bindings and DLXs."""
    flag = st.booleans()
    exchanges = [
        {"name": name, "type": draw(st.sampled_from(["topic", "fanout", "direct", "headers"]))}
        | draw(
            table({}, {"durable": flag, "auto_delete": flag, "internal": flag, "arguments": ARGS})
        )
        for name in draw(st.lists(st.sampled_from(["x1", "x2", "x3", "x4"]), unique=True))
    ]
    xnames = [e["name"] for e in exchanges]
    dlx = st.sampled_from([*xnames, ""])
    queues = [
        {"name": name}
        | draw(
            table(
                {},
                {
                    "durable": flag,
                    "exclusive": flag,
                    "auto_delete": flag,
                    "queue_type": st.sampled_from(["classic", "quorum"]),
                    "max_length": st.integers(0, 10**6),
                    "overflow": st.sampled_from(["drop-head", "reject-publish"]),
                    "message_ttl": st.integers(0, 10**6),
                    "dead_letter_exchange": dlx,
                },
            )
        )
        for name in draw(st.lists(st.sampled_from(["q1", "q2", "q3"]), unique=True))
    ]
    qnames = [q["name"] for q in queues]
    bindings: list[dict[str, Any]] = []
    if xnames:
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["queue", "exchange"]) if qnames else st.just("exchange"))
            binding = {
                "source": draw(st.sampled_from(xnames)),
                "destination": draw(st.sampled_from(qnames if kind == "queue" else xnames)),
                "destination_type": kind,
                "routing_key": draw(st.sampled_from(["#", "a.*", ""])),
            }
            if binding not in bindings:
                bindings.append(binding)
    keys = st.sampled_from(["{facility}.{severity}", "{severity}", "{host}.x"])
    emit: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        choices = [*xnames, *([""] if qnames else [])]
        exchange = draw(st.sampled_from(choices)) if choices else "nowhere"
        key = draw(st.sampled_from(qnames)) if exchange == "" else draw(keys)
        if {"exchange": exchange, "key": key} not in emit:
            emit.append({"exchange": exchange, "key": key})
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings, "emit": emit}


@settings(max_examples=1000, deadline=None)
@given(connected())
def test_connected_topologies_read_and_declare_alike(data: Any) -> None:
    """Topologies with reachable parts: both checks agree, values and plans are equal."""
    try:
        model = Topology.model_validate(data)
    except ValidationError:
        assert plain.plain_topology(data) is None
        return
    checked = plain.plain_topology(data)
    if checked is None:  # only for arguments the light check leaves alone
        assert any(
            type(v) not in (str, bool, int)
            for section in ("exchanges", "queues")
            for item in data[section]
            for v in item.get("arguments", {}).values()
        )
        return
    assert dumped(checked) == model.model_dump()
    assert planned(checked) == full_plan(model)
