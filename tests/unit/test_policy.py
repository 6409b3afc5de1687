import pytest

from llmlb.balancer.policy import NodeView, Saturated, choose


def node(
    i,
    models=("m",),
    loaded=(),
    in_flight=0,
    capacity=4,
    last_used=0.0,
    vram_free=0,
    online=True,
    cooling=False,
):
    return NodeView(
        f"n{i}",
        online,
        frozenset(models),
        frozenset(loaded),
        in_flight,
        capacity,
        last_used,
        vram_free,
        cooling,
    )


def test_only_online_nodes_with_the_model():
    nodes = [node(1, online=False), node(2, models=("other",)), node(3)]
    assert choose(nodes, "m").id == "n3"
    assert choose(nodes, "missing") is None
    assert choose([node(1, online=False)], "m") is None


def test_loaded_beats_less_busy():
    nodes = [node(1, in_flight=0), node(2, loaded=("m",), in_flight=2)]
    assert choose(nodes, "m").id == "n2"


def test_fewest_in_flight_then_lru_then_vram():
    assert choose([node(1, in_flight=2), node(2, in_flight=1)], "m").id == "n2"
    assert choose([node(1, last_used=5.0), node(2, last_used=3.0)], "m").id == "n2"
    assert choose([node(1, vram_free=10), node(2, vram_free=20)], "m").id == "n2"


def test_ties_are_stable():
    nodes = [node(2), node(1), node(3)]
    assert choose(nodes, "m").id == "n1"


def test_saturated_nodes_are_skipped_and_all_saturated_raises():
    nodes = [node(1, loaded=("m",), in_flight=4), node(2, in_flight=3)]
    assert choose(nodes, "m").id == "n2"
    with pytest.raises(Saturated):
        choose([node(1, in_flight=4), node(2, in_flight=5)], "m")


def test_exclude_for_retries():
    nodes = [node(1, loaded=("m",)), node(2)]
    assert choose(nodes, "m", exclude=frozenset({"n1"})).id == "n2"
    assert choose(nodes, "m", exclude=frozenset({"n1", "n2"})) is None


def test_cooling_nodes_are_a_last_resort():
    nodes = [node(1, loaded=("m",), cooling=True), node(2, in_flight=3)]
    assert choose(nodes, "m").id == "n2"
    assert (
        choose([node(1, cooling=True), node(2, in_flight=4)], "m").id == "n1"
    )  # the only free one
    assert choose([node(1, cooling=True)], "m").id == "n1"


def test_ranked_puts_the_chosen_node_first_and_full_ones_last():
    from llmlb.balancer.policy import ranked

    nodes = [
        node(1, in_flight=4),  # full (capacity 4)
        node(2, in_flight=1),
        node(3, loaded=("m",), in_flight=2),
        node(4, online=False),
    ]
    order = [n.id for n in ranked(nodes, "m")]
    assert order == ["n3", "n2", "n1"] and order[0] == choose(nodes, "m").id
    assert ranked(nodes, "m", frozenset({"n3"}))[0].id == "n2"
    assert ranked(nodes, "other") == []
