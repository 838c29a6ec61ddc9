"""logbus.admin without a broker: where the management API is, and drift between snapshots."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from logbus.admin import diff, name_prefix
from logbus.management import (
    BindingState,
    ExchangeState,
    QueueState,
    Snapshot,
    management_api,
    snapshot_from_management,
    vhost_of,
)
from logbus.topology import Binding, Exchange, Queue, Topology, default

# -- the management API's address -------------------------------------------------------


def test_management_url_is_the_amqp_host_on_port_15672_with_its_credentials():
    """amqp://user:pass@host:5672/vhost gives http://host:15672 as user with pass."""
    api = management_api("amqp://ops:s3cret@mq1.example:5672/logs")
    assert api is not None
    assert (api.base, api.user, api.password) == ("http://mq1.example:15672", "ops", "s3cret")


def test_management_url_of_amqps_is_https_on_port_15671():
    """A TLS AMQP URL gives the management API's TLS listener."""
    api = management_api("amqps://ops:pw@mq1.example/logs")
    assert api is not None
    assert api.base == "https://mq1.example:15671"


def test_management_url_decodes_percent_encoded_credentials():
    """A password written %-encoded in the URL is sent decoded."""
    api = management_api("amqp://ops:p%40ss%2Fword@mq1/")
    assert api is not None
    assert api.password == "p@ss/word"


def test_management_url_without_credentials_logs_in_as_guest():
    """No credentials in the AMQP URL means pika's guest/guest, for HTTP too."""
    api = management_api("amqp://localhost")
    assert api is not None
    assert (api.user, api.password) == ("guest", "guest")


def test_management_url_of_a_failover_list_is_its_first_host():
    """Several comma-separated AMQP URLs: the API of the first."""
    api = management_api("amqp://a:pw@mq1:5672/%2F,amqp://a:pw@mq2:5672/%2F")
    assert api is not None
    assert api.base == "http://mq1:15672"


def test_management_url_of_an_ipv6_host_is_bracketed():
    """An IPv6 literal stays a valid URL host."""
    api = management_api("amqp://a:pw@[::1]:5672/%2F")
    assert api is not None
    assert api.base == "http://[::1]:15672"


def test_management_override_without_credentials_borrows_the_amqp_ones():
    """--management-url http://web:8080/rabbitmq keeps the AMQP URL's user and password."""
    api = management_api("amqp://ops:pw@mq1/", "http://web:8080/rabbitmq/")
    assert api is not None
    assert (api.base, api.user, api.password) == ("http://web:8080/rabbitmq", "ops", "pw")


def test_management_override_with_credentials_uses_them():
    """Credentials in the override win over the AMQP URL's."""
    api = management_api("amqp://ops:pw@mq1/", "https://admin:other@mq1:15671")
    assert api is not None
    assert (api.base, api.user, api.password) == ("https://mq1:15671", "admin", "other")


@pytest.mark.parametrize("off", ["off", "OFF", "none"])
def test_management_override_off_means_amqp_only(off):
    """--management-url off: no management API at all."""
    assert management_api("amqp://ops:pw@mq1/", off) is None


def test_no_management_url_for_an_in_process_broker():
    """memory:// has no management API."""
    assert management_api("memory://x") is None


def test_management_api_never_shows_its_password():
    """str() and repr() show the user and *** instead of the password."""
    api = management_api("amqp://ops:Sup3rSecret@mq1/")
    assert api is not None
    for shown in (str(api), repr(api), f"{api!r} {api}"):
        assert "Sup3rSecret" not in shown
        assert "ops:***@mq1:15672" in shown


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://g:g@h:5672/%2F", "/"),
        ("amqp://g:g@h:5672/", "/"),
        ("amqp://g:g@h:5672", "/"),
        ("amqp://g:g@h:5672/logs", "logs"),
        ("amqp://g:g@h/team%2Flogs", "team/logs"),
    ],
)
def test_vhost_is_read_from_the_url_path_as_pika_reads_it(url, vhost):
    """An empty path is /, and the path is %-decoded."""
    assert vhost_of(url) == vhost


# -- snapshots from the management API's JSON --------------------------------------------


def test_snapshot_from_management_json_keeps_properties_counts_rates_and_alarms():
    """Exchanges, queues (ready, unacked, consumers, rates), bindings and alarms are read."""
    seen = snapshot_from_management(
        "/",
        [{"name": "x", "type": "topic", "durable": True, "auto_delete": False, "arguments": {}}],
        [
            {
                "name": "q",
                "durable": True,
                "type": "quorum",
                "arguments": {"x-queue-type": "quorum"},
                "messages_ready": 7,
                "messages_unacknowledged": 2,
                "consumers": 1,
                "message_stats": {"publish_details": {"rate": 1.5}},
            }
        ],
        [{"source": "x", "destination": "q", "destination_type": "queue", "routing_key": "#"}],
        {"product_name": "RabbitMQ", "product_version": "3.10.8", "node": "rabbit@a"},
        [{"name": "rabbit@a", "mem_alarm": True, "disk_free_alarm": False}],
    )
    q = seen.queues["q"]
    assert (q.ready, q.unacked, q.consumers, q.type) == (7, 2, 1, "quorum")
    assert (q.publish_rate, q.deliver_rate) == (1.5, None)
    assert seen.exchanges["x"].type == "topic"
    assert seen.bindings == (BindingState("x", "q", "queue", "#"),)
    assert seen.info.version == "3.10.8"
    assert seen.info.alarms == ("memory alarm on rabbit@a",)
    assert seen.complete


# -- drift ---------------------------------------------------------------------------------


def _broker_with(topology: Topology) -> dict[str, Any]:
    """What the management API would show right after declaring ``topology``."""
    return {
        "exchanges": {e.name: ExchangeState(**dataclasses.asdict(e)) for e in topology.exchanges},
        "queues": {
            q.name: QueueState(
                q.name,
                q.durable,
                q.exclusive,
                q.auto_delete,
                q.amqp_arguments().get("x-queue-type", "classic"),
                q.amqp_arguments(),
            )
            for q in topology.queues
        },
        "bindings": tuple(
            BindingState(b.source, b.destination, b.destination_type, b.routing_key, b.arguments)
            for b in topology.bindings
        ),
    }


def _seen(**parts: Any) -> Snapshot:
    return Snapshot("management", "/", complete=True, **parts)


def test_a_broker_that_has_exactly_the_topology_is_in_sync():
    """The default topology, declared as it is, shows no drift and nothing extra."""
    drift = diff(default(), _seen(**_broker_with(default())))
    assert drift.in_sync
    assert drift.differences == ()
    assert drift.extra == ()


def test_an_empty_broker_lacks_every_entity_and_binding():
    """Every exchange, queue and binding is reported missing, and nothing else."""
    drift = diff(default(), _seen(exchanges={}, queues={}, bindings=()))
    assert not drift.in_sync
    missing = {(d.entity, d.prop) for d in drift.differences}
    assert missing == {("exchange", None), ("queue", None), ("binding", None)}
    assert len(drift.differences) == 4 + 2 + 5


def test_another_max_length_names_the_argument_and_both_values():
    """x-max-length 500 in the config against 100000 on the broker is one difference."""
    broker = _broker_with(default())
    config = Topology(
        exchanges=default().exchanges,
        queues=(
            Queue(name="logbus.tasks", max_length=500, overflow="reject-publish"),
            default().queue("logbus.history"),
        ),
        bindings=default().bindings,
    )
    (d,) = diff(config, _seen(**broker)).differences
    assert (d.entity, d.name, d.prop, d.config, d.broker) == (
        "queue",
        "logbus.tasks",
        "x-max-length",
        500,
        100_000,
    )
    assert "x-max-length differs: config has 500, broker has 100000" in str(d)


def test_an_argument_only_on_the_broker_is_a_difference():
    """A queue with x-message-ttl the config does not set differs, showing (none)."""
    broker = _broker_with(default())
    tasks = broker["queues"]["logbus.tasks"]
    broker["queues"]["logbus.tasks"] = QueueState(
        tasks.name, True, False, False, "classic", {**tasks.arguments, "x-message-ttl": 60000}
    )
    (d,) = diff(default(), _seen(**broker)).differences
    assert (d.prop, d.config, d.broker) == ("x-message-ttl", None, 60000)
    assert "config has (none), broker has 60000" in str(d)


def test_exchange_type_and_durability_are_compared():
    """A fanout config exchange that is a transient direct one on the broker: two differences."""
    topology = Topology(exchanges=(Exchange(name="app.x", type="fanout"),))
    broker = {"app.x": ExchangeState("app.x", "direct", False, False, False, {})}
    drift = diff(topology, _seen(exchanges=broker, queues={}, bindings=()))
    got = {(d.prop, d.config, d.broker) for d in drift.differences}
    assert got == {("type", "fanout", "direct"), ("durable", True, False)}


def test_a_quorum_queue_in_the_config_against_a_classic_one_differs_in_type():
    """The queue type is compared with the broker's type, classic when none was declared."""
    topology = Topology(queues=(Queue(name="app.q", queue_type="quorum"),))
    broker = {"app.q": QueueState("app.q", True, False, False, "classic", {})}
    (d,) = diff(topology, _seen(exchanges={}, queues=broker, bindings=())).differences
    assert (d.prop, d.config, d.broker) == ("x-queue-type", "quorum", "classic")


def test_a_missing_exchange_to_exchange_binding_is_drift():
    """Dropping the topic->fanout binding on the broker is reported, naming both ends."""
    broker = _broker_with(default())
    broker["bindings"] = tuple(b for b in broker["bindings"] if b.destination != "logbus.fanout")
    (d,) = diff(default(), _seen(**broker)).differences
    assert d.entity == "binding"
    assert d.binding == BindingState("logbus.topic", "logbus.fanout", "exchange", "#")
    assert "'logbus.topic' -> exchange 'logbus.fanout' key '#'" in str(d)


def test_a_binding_with_other_arguments_is_not_the_configured_one():
    """A headers binding matching on host=web2 does not stand in for host=web1."""
    topology = Topology(
        exchanges=(Exchange(name="app.h", type="headers"),),
        queues=(Queue(name="app.q"),),
        bindings=(Binding(source="app.h", destination="app.q", arguments={"host": "web1"}),),
    )
    broker = _broker_with(topology)
    broker["bindings"] = (BindingState("app.h", "app.q", "queue", "", {"host": "web2"}),)
    drift = diff(topology, _seen(**broker))
    assert [d.entity for d in drift.differences] == ["binding"]
    assert any("host" in line and "web2" in line for line in drift.extra)


def test_passive_declares_check_presence_only_and_say_what_they_could_not():
    """Through AMQP, present entities without properties are in sync; bindings are unchecked."""
    topology = default()
    seen = Snapshot(
        "amqp",
        "/",
        exchanges={e.name: ExchangeState(e.name) for e in topology.exchanges},
        queues={q.name: QueueState(q.name, ready=3, consumers=0) for q in topology.queues},
        bindings=None,
        complete=False,
        note="the management API at http://guest:***@h:15672 does not answer",
    )
    drift = diff(topology, seen)
    assert drift.in_sync
    assert any(line.startswith("bindings") for line in drift.unchecked)
    assert any(line.startswith("properties") for line in drift.unchecked)
    assert drift.to_dict()["note"] == seen.note


def test_passive_declares_still_see_a_missing_queue():
    """Through AMQP, a queue that is not there is drift."""
    topology = default()
    seen = Snapshot(
        "amqp",
        "/",
        exchanges={e.name: ExchangeState(e.name) for e in topology.exchanges},
        queues={},
        bindings=None,
        complete=False,
    )
    got = {(d.entity, d.name, d.prop) for d in diff(topology, seen).differences}
    assert got == {("queue", "logbus.tasks", None), ("queue", "logbus.history", None)}


def test_other_entities_on_the_broker_are_not_drift():
    """amq.*, other apps' and subscribers' entities never count; same-prefix ones are listed."""
    broker = _broker_with(default())
    broker["exchanges"] |= {
        "amq.topic": ExchangeState("amq.topic", "topic", True, False, False, {}),
        "billing.events": ExchangeState("billing.events", "topic", True, False, False, {}),
        "logbus.old": ExchangeState("logbus.old", "topic", True, False, False, {}),
    }
    broker["queues"] |= {"amq.gen-abc": QueueState("amq.gen-abc", False, True, True, "classic", {})}
    broker["bindings"] += (BindingState("logbus.topic", "amq.gen-abc", "queue", "kern.*"),)
    drift = diff(default(), _seen(**broker))
    assert drift.in_sync
    assert drift.extra == ("exchange 'logbus.old' (on the broker, not in the config)",)


def test_an_exclusive_queue_in_the_config_is_not_checked():
    """An exclusive queue lives only with its connection: it is named as unchecked, not missing."""
    topology = Topology(queues=(Queue(name="app.mine", exclusive=True, durable=False),))
    drift = diff(topology, _seen(exchanges={}, queues={}, bindings=()))
    assert drift.in_sync
    assert drift.unchecked == ("queue 'app.mine': exclusive, it lives only with its connection",)


def test_drift_as_json_splits_missing_from_different():
    """to_dict() lists missing entities and differing properties apart, with both values."""
    broker = _broker_with(default())
    del broker["exchanges"]["logbus.headers"]
    broker["bindings"] = tuple(b for b in broker["bindings"] if b.destination != "logbus.headers")
    broker["queues"]["logbus.tasks"] = QueueState(
        "logbus.tasks",
        False,
        False,
        False,
        "classic",
        {
            "x-max-length": 100_000,
            "x-overflow": "reject-publish",
        },
    )
    out = diff(default(), _seen(**broker)).to_dict()
    assert out["in_sync"] is False
    assert {m["entity"] for m in out["missing"]} == {"exchange", "binding"}
    assert out["different"] == [
        {
            "entity": "queue",
            "name": "logbus.tasks",
            "property": "durable",
            "config": True,
            "broker": False,
        }
    ]


@pytest.mark.parametrize(
    ("names", "prefix"),
    [
        (["logbus.topic", "logbus.tasks"], "logbus."),
        (["t-1a2b-logbus.topic", "t-1a2b-logbus.fanout"], "t-1a2b-logbus."),
        (["logbus.tasks"], "logbus."),
        (["orders", "billing"], ""),
    ],
)
def test_name_prefix_stops_at_a_separator(names, prefix):
    """The shared prefix ends at its last '.', '-', '_', ':' or '/'."""
    topology = Topology(queues=tuple(Queue(name=n) for n in names))
    assert name_prefix(topology) == prefix
