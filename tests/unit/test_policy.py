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
    matched=0,
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
        matched,
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


# -- prefix routing: SGLang's cache-aware rule ---------------------------------------------------
BALANCE = 2


def test_the_node_holding_the_longest_prefix_wins_over_a_less_busy_one():
    nodes = [node(1), node(2, in_flight=2, matched=900), node(3, in_flight=1, matched=300)]
    assert choose(nodes, "m", balance=BALANCE).id == "n2"
    assert choose(nodes, "m").id == "n1"  # without prefix routing: the least busy


def test_balance_wins_once_the_holder_is_loaded_past_the_threshold():
    nodes = [node(1), node(2, in_flight=3, matched=900)]
    assert choose(nodes, "m", balance=BALANCE).id == "n1"  # 3 more than the least busy
    assert choose(nodes, "m", balance=3).id == "n2"
    assert (
        choose([node(1, in_flight=1), node(2, in_flight=3, matched=900)], "m", balance=BALANCE).id
        == "n2"
    )


def test_a_holder_without_room_is_passed_over():
    nodes = [node(1, in_flight=1), node(2, in_flight=4, matched=900)]  # capacity 4
    assert choose(nodes, "m", balance=10).id == "n1"


def test_equal_prefixes_go_to_the_less_busy_holder():
    nodes = [node(1), node(2, in_flight=1, matched=500), node(3, matched=500)]
    assert choose(nodes, "m", balance=BALANCE).id == "n3"


def test_the_prefix_counts_within_the_best_tier_only():
    cooling = [node(1), node(2, matched=900, cooling=True)]
    assert choose(cooling, "m", balance=BALANCE).id == "n1"
    not_loaded = [node(1, loaded=("m",)), node(2, matched=900)]
    assert choose(not_loaded, "m", balance=BALANCE).id == "n1"
    nowhere_loaded = [node(1), node(2, matched=900)]
    assert choose(nowhere_loaded, "m", balance=BALANCE).id == "n2"


def test_nobody_holding_anything_leaves_the_usual_choice():
    nodes = [node(1, in_flight=2), node(2, in_flight=1, last_used=5.0), node(3, in_flight=1)]
    assert choose(nodes, "m", balance=BALANCE).id == choose(nodes, "m").id == "n3"


def test_outcomes_for_the_metrics():
    from llmlb.balancer.policy import outcome

    holder, other = node(1, matched=900), node(2, matched=100)
    assert outcome([holder, other], holder) == "hit"
    assert outcome([holder, other], other) == "balanced"
    assert outcome([node(1), node(2)], node(2)) == "miss"
