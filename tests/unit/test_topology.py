"""Topology models, the default topology, TOML loading with line-precise errors, dumping."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from logbus import topology
from logbus.errors import ConfigError, InvalidTopology
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, default, dumps, loads

REPO = Path(__file__).resolve().parents[2]

ONE_LINE_ERROR = re.compile(r"^cfg\.toml:(\d+): [^\n]+ \([^\n]+\)$")


def error_line(text: str) -> tuple[int, str]:
    """Load ``text`` expecting a ConfigError; return its line number and message."""
    with pytest.raises(ConfigError) as caught:
        loads(text, source="cfg.toml")
    message = str(caught.value)
    match = ONE_LINE_ERROR.match(message)
    assert match, message
    return int(match[1]), message


def rich() -> Topology:
    """A topology using every field and awkward values, for round trips."""
    return Topology(
        exchanges=(
            Exchange(name="t", type="topic"),
            Exchange(name="dlx", type="fanout", durable=False, auto_delete=True),
            Exchange(
                name="in", type="headers", internal=True, arguments={"alternate-exchange": "t"}
            ),
        ),
        queues=(
            Queue(
                name='q ü "quoted" \\ \t\x7f',
                queue_type="quorum",
                max_length=5,
                overflow="drop-head",
                message_ttl=60_000,
                dead_letter_exchange="dlx",
                dead_letter_routing_key="dead",
                arguments={"x-delivery-limit": 3, "x-custom": {"nested": [1.5, True, "s"]}},
            ),
            Queue(name="temp", durable=False, exclusive=True, auto_delete=True),
            Queue(name="bounded", max_length=7, bounds="policy"),
        ),
        bindings=(
            Binding(source="t", destination="in", destination_type="exchange", routing_key="#"),
            Binding(source="in", destination="temp", arguments={"x-match": "any", "host": "web1"}),
        ),
        emit=(
            EmitTarget(exchange="t"),
            EmitTarget(exchange="", key="temp"),
            EmitTarget(exchange="t", key="{{{app}}}.{host}", mandatory=False, name="by-app"),
        ),
    )


def test_config_file_is_the_default_topology() -> None:
    """config/logbus.toml loads to exactly default()."""
    assert topology.load(REPO / "config" / "logbus.toml") == default()


def test_default_topology_feeds_every_style_from_the_topic_exchange() -> None:
    """The default has the DESIGN's exchanges, e2e bindings with '#', and one emit target."""
    top = default()
    assert {(e.name, e.type, e.durable) for e in top.exchanges} == {
        ("logbus.topic", "topic", True),
        ("logbus.fanout", "fanout", True),
        ("logbus.direct", "direct", True),
        ("logbus.headers", "headers", True),
    }
    assert {(b.source, b.destination, b.destination_type, b.routing_key) for b in top.bindings} == {
        ("logbus.topic", "logbus.fanout", "exchange", "#"),
        ("logbus.topic", "logbus.direct", "exchange", "#"),
        ("logbus.topic", "logbus.headers", "exchange", "#"),
        ("logbus.topic", "logbus.tasks", "queue", "#"),
        ("logbus.topic", "logbus.history", "queue", "#"),
    }
    assert top.emit == (EmitTarget(exchange="logbus.topic", key="{facility}.{severity}"),)


def test_default_work_queue_is_durable_bounded_and_rejects_at_the_bound() -> None:
    """logbus.tasks is durable with x-max-length 100000 and x-overflow reject-publish."""
    tasks = default().queue("logbus.tasks")
    assert tasks.durable
    assert tasks.amqp_arguments() == {"x-max-length": 100_000, "x-overflow": "reject-publish"}


def test_default_history_is_a_durable_stream_with_age_and_size_retention() -> None:
    """logbus.history is a durable stream keeping 7 days, at most 1 GiB."""
    history = default().queue("logbus.history")
    assert history.durable and not history.exclusive and not history.auto_delete
    assert history.amqp_arguments() == {
        "x-queue-type": "stream",
        "x-max-age": "7D",
        "x-max-length-bytes": 1 << 30,
    }


def test_a_toml_topology_declares_a_stream_with_friendly_retention() -> None:
    """queue_type = "stream" with max_age and max_length_bytes reads to its x-arguments."""
    top = loads(
        '[[queues]]\nname = "h"\nqueue_type = "stream"\nmax_age = "12h"\nmax_length_bytes = 1000\n'
    )
    assert top.queue("h").amqp_arguments() == {
        "x-queue-type": "stream",
        "x-max-age": "12h",
        "x-max-length-bytes": 1000,
    }


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('max_age = "7 days"', "is not an age"),
        ("max_length = 5", "cannot have x-max-length"),
        ('overflow = "reject-publish"', "cannot have x-overflow"),
        ("message_ttl = 5", "cannot have x-message-ttl"),
        ("durable = false", "cannot have durable = false"),
    ],
)
def test_a_stream_refuses_what_rabbitmq_refuses_with_the_line(line: str, words: str) -> None:
    """A bad age or another queue type's argument on a stream is an error naming the line."""
    text = f'[[queues]]\nname = "h"\nqueue_type = "stream"\n{line}\n'
    with pytest.raises(ConfigError, match=words) as caught:
        loads(text, source="t.toml")
    assert str(caught.value).startswith("t.toml:4:")


def test_max_age_belongs_to_streams_only() -> None:
    """max_age on a classic queue is refused: RabbitMQ would ignore it silently."""
    with pytest.raises(ConfigError, match="max_age is for streams only"):
        loads('[[queues]]\nname = "q"\nmax_age = "7D"\n')


@pytest.mark.parametrize("top", [default(), rich()], ids=["default", "rich"])
def test_dumps_then_loads_gives_an_equal_topology(top: Topology) -> None:
    """dumps writes TOML that loads reads back to an equal topology."""
    assert loads(dumps(top)) == top


def test_friendly_fields_become_x_arguments() -> None:
    """Each friendly queue field is merged into the raw arguments under its x- name."""
    queue = Queue(
        name="q",
        queue_type="quorum",
        max_length=10,
        overflow="reject-publish",
        message_ttl=5000,
        dead_letter_exchange="dlx",
        dead_letter_routing_key="dead",
        arguments={"x-delivery-limit": 4},
    )
    assert queue.amqp_arguments() == {
        "x-delivery-limit": 4,
        "x-queue-type": "quorum",
        "x-max-length": 10,
        "x-overflow": "reject-publish",
        "x-message-ttl": 5000,
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "dead",
    }
    assert Queue(name="plain").amqp_arguments() == {}


def test_friendly_field_and_same_raw_argument_conflict() -> None:
    """Setting max_length and arguments['x-max-length'] together is rejected."""
    with pytest.raises(InvalidTopology, match="keep only max_length"):
        Queue(name="q", max_length=1, arguments={"x-max-length": 1})


@pytest.mark.parametrize(
    "flags",
    [{"durable": False}, {"exclusive": True}, {"auto_delete": True}],
    ids=["not-durable", "exclusive", "auto-delete"],
)
def test_quorum_queue_must_be_durable_and_not_exclusive_or_auto_delete(flags: Any) -> None:
    """A quorum queue that is transient, exclusive or auto-delete is rejected."""
    with pytest.raises(InvalidTopology, match="quorum queue cannot have"):
        Queue(name="q", queue_type="quorum", **flags)


def test_quorum_rules_apply_to_a_raw_x_queue_type_too() -> None:
    """arguments['x-queue-type'] = 'quorum' gets the same checks as queue_type."""
    with pytest.raises(InvalidTopology, match="exclusive"):
        Queue(name="q", exclusive=True, arguments={"x-queue-type": "quorum"})


def test_syntax_error_names_its_line() -> None:
    """A TOML syntax error is reported at the line tomllib found it."""
    line, message = error_line('[[exchanges]]\nname = "x"\ntype = \n')
    assert line == 3
    assert "invalid TOML" in message


def test_unknown_key_in_second_queue_names_its_line() -> None:
    """An unknown key is reported at its own line, inside the right [[queues]] table."""
    text = """\
[[queues]]
name = "a"
max_length = 1

[[queues]]
name = "b"
# bounded
max_lenght = 5
"""
    line, message = error_line(text)
    assert line == 8
    assert "[[queues]] #2" in message
    assert "did you mean 'max_length'?" in message


def test_binding_to_undeclared_exchange_names_its_line() -> None:
    """A binding whose source is not declared is reported at its source line."""
    text = """\
[[exchanges]]
name = "logbus.topic"
type = "topic"

[[queues]]
name = "q"

[[bindings]]
source = "logbus.topic"
destination = "q"

[[bindings]]
destination = "q"
source = "logbus.topik"
"""
    line, message = error_line(text)
    assert line == 14
    assert "did you mean 'logbus.topic'?" in message


def test_bad_exchange_type_names_its_line() -> None:
    """An exchange type outside the four AMQP types is reported at its line."""
    text = '[[exchanges]]\nname = "a"\ntype = "topic"\n[[exchanges]]\nname = "b"\ntype = "topics"\n'
    line, message = error_line(text)
    assert line == 6
    assert "'fanout', 'direct', 'topic' or 'headers'" in message


def test_unknown_emit_placeholder_names_its_line() -> None:
    """A key template with an unknown placeholder is refused at load time, at its line."""
    text = (
        '[[exchanges]]\nname = "x"\ntype = "topic"\n\n[[emit]]\nexchange = "x"\nkey = "{level}"\n'
    )
    line, message = error_line(text)
    assert line == 7
    assert "{level}" in message


def test_key_in_a_sub_table_is_located() -> None:
    """A problem in [queues.arguments] is reported at that table's key line."""
    text = (
        '[[queues]]\nname = "q"\nqueue_type = "quorum"\n\n[queues.arguments]\nx-queue-type = "x"\n'
    )
    line, message = error_line(text)
    assert line == 3
    assert "keep only queue_type" in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """Loading a file that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        topology.load(missing)


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    """Errors from load() start with the path given and the line."""
    path = tmp_path / "logbus.toml"
    path.write_text('[[exchanges]]\ntype = "topic"\nname = 1\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3: "):
        topology.load(path)


def test_default_exchange_cannot_be_bound() -> None:
    """A binding with source "" is rejected."""
    with pytest.raises(InvalidTopology, match="default exchange cannot be bound"):
        Binding(source="", destination="q")


@pytest.mark.parametrize(
    ("section", "entry"),
    [
        ("bindings", Binding(source="t", destination="nowhere")),
        ("bindings", Binding(source="t", destination="x", destination_type="exchange")),
        ("emit", EmitTarget(exchange="x")),
        ("emit", EmitTarget(exchange="", key="no-such-queue")),
    ],
    ids=["queue", "exchange", "emit-exchange", "emit-queue"],
)
def test_references_must_be_declared(section: str, entry: Any) -> None:
    """Bindings and emit targets may only name declared exchanges and queues."""
    base = {"exchanges": (Exchange(name="t", type="topic"),), section: (entry,)}
    with pytest.raises(InvalidTopology, match="is not declared"):
        Topology(**base)


def test_names_must_be_unique() -> None:
    """Two exchanges with one name are rejected."""
    with pytest.raises(InvalidTopology, match="declared twice"):
        Topology(exchanges=(Exchange(name="a", type="topic"), Exchange(name="a", type="direct")))


def test_emit_target_renders_its_template() -> None:
    """render fills facility, severity, host and app into the key."""
    target = EmitTarget(exchange="x", key="{app}@{host}:{facility}.{severity}")
    assert target.render("kern", "critical", "web1", "nginx") == "nginx@web1:kern.critical"


def test_lookups_return_the_entity_or_a_config_error() -> None:
    """exchange()/queue() find by name, and suggest a near name when missing."""
    top = default()
    assert top.exchange("logbus.direct").type == "direct"
    with pytest.raises(ConfigError, match=r"did you mean 'logbus\.tasks'"):
        top.queue("logbus.task")


def test_all_lists_public_names_that_exist() -> None:
    """Every name in __all__ is defined by the module."""
    assert all(hasattr(topology, name) for name in topology.__all__)


def test_a_dead_letter_exchange_that_is_not_a_name_is_refused():
    """arguments = { x-dead-letter-exchange = true }: one line naming the argument."""
    text = '[[queues]]\nname = "q"\narguments = { "x-dead-letter-exchange" = true }\n'
    with pytest.raises(ConfigError, match=r"t\.toml:3: .*x-dead-letter-exchange.*not a name"):
        loads(text, source="t.toml")


def test_publishing_to_the_topic_exchange_reaches_the_whole_default_topology() -> None:
    """What `logbus emit` declares for the default: 4 exchanges, the work queue, 4 bindings."""
    full = default()
    needed = topology.reachable(full, exchanges=["logbus.topic"])
    assert (needed.exchanges, needed.queues, needed.bindings) == (
        full.exchanges,
        full.queues,
        full.bindings,
    )
    assert needed.emit == ()


def test_reachable_follows_dead_letter_exchanges_and_leaves_the_rest() -> None:
    """A queue's dead-letter exchange and what it feeds are reached; unrelated parts are not."""
    topo = Topology(
        exchanges=(
            Exchange(name="in", type="topic"),
            Exchange(name="dlx", type="fanout"),
            Exchange(name="other", type="fanout"),
        ),
        queues=(
            Queue(name="work", dead_letter_exchange="dlx"),
            Queue(name="dead"),
            Queue(name="elsewhere"),
        ),
        bindings=(
            Binding(source="in", destination="work", routing_key="#"),
            Binding(source="dlx", destination="dead"),
            Binding(source="other", destination="elsewhere"),
        ),
    )
    needed = topology.reachable(topo, exchanges=["in"])
    assert {e.name for e in needed.exchanges} == {"in", "dlx"}
    assert {q.name for q in needed.queues} == {"work", "dead"}
    assert {b.source for b in needed.bindings} == {"in", "dlx"}


def test_a_dead_letter_route_through_the_default_exchange_reaches_everything() -> None:
    """x-dead-letter-exchange = "" routes by queue name: the whole topology is kept."""
    topo = Topology(
        exchanges=(Exchange(name="in", type="topic"), Exchange(name="other", type="fanout")),
        queues=(
            Queue(name="work", dead_letter_exchange="", dead_letter_routing_key="q"),
            Queue(name="q"),
        ),
        bindings=(
            Binding(source="in", destination="work"),
            Binding(source="other", destination="q"),
        ),
        emit=(EmitTarget(exchange="in"),),
    )
    needed = topology.reachable(topo, exchanges=["in"])
    assert (needed.exchanges, needed.queues, needed.bindings, needed.emit) == (
        topo.exchanges,
        topo.queues,
        topo.bindings,
        (),
    )


def test_no_emit_targets_names_the_file_and_the_fix() -> None:
    """The message for a topology without [[emit]] names the file and both ways out."""
    said = topology.no_emit_targets("/etc/t.toml")
    assert "the topology file /etc/t.toml has no [[emit]] table" in said
    assert "--exchange NAME or --queue NAME" in said
    assert "targets=[EmitTarget(...)]" in topology.no_emit_targets(None, api=True)


def test_to_dict_and_from_dict_round_trip() -> None:
    """to_dict() is JSON data (unset fields left out) that from_dict() reads back equal."""
    for topo in (default(), rich()):
        data = topo.to_dict()
        assert Topology.from_dict(json.loads(json.dumps(data))) == topo
    assert "queue_type" not in default().to_dict()["queues"][0]


@pytest.mark.parametrize(
    ("build", "said"),
    [
        (lambda: Exchange(name="x", type="topic", durable="yes"), 'durable = "yes": input should'),
        (
            lambda: Queue(name="q", max_length="5"),
            'max_length = "5": input should be a valid integer',
        ),
        (lambda: Queue(name="q", max_length=-1), "greater than or equal to 0"),
        (lambda: Exchange(name="x", type="topics"), "'fanout', 'direct', 'topic' or 'headers'"),
        (lambda: Topology(queues=(Exchange(name="x", type="topic"),)), "should be a Queue"),
    ],
)
def test_entities_built_in_code_are_checked_as_files_are(build: Any, said: str) -> None:
    """A wrong type or value in code is an InvalidTopology (a ConfigError and a ValueError)."""
    with pytest.raises(InvalidTopology, match=re.escape(said)) as caught:
        build()
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)


def test_from_dict_names_the_table_of_a_problem() -> None:
    """from_dict says which table is wrong, as loads does (without a line)."""
    with pytest.raises(InvalidTopology, match=r"\[\[queues\]\] #2: unknown key 'colour'"):
        Topology.from_dict({"queues": [{"name": "a"}, {"name": "b", "colour": 1}]})
