"""Pick a node for a request: a pure function over a snapshot, so it is tested without servers.

Order: online nodes that have the model; nodes cooling down after a failure only when no other
node has a free slot; then those where the model is already loaded; then the fewest in-flight
requests; then the least recently used; then the most free VRAM.

With prefix routing (`balance` given), SGLang's cache-aware rule comes first: among the nodes
of that best tier with room, the one that holds the longest prefix of the request
(`matched`, in characters: llmlb/prefix.py) gets it, unless it has more than `balance`
requests in flight beyond the least loaded of them; then balance wins, as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeView:
    id: str
    online: bool
    models: frozenset[str]
    loaded: frozenset[str] = field(default_factory=frozenset)
    in_flight: int = 0
    capacity: int = 8
    last_used: float = 0.0
    vram_free: int = 0
    cooling: bool = False  # failed recently (connection error or 5xx): used only as a last resort
    matched: int = 0  # characters of the request's prefix it holds in its prompt cache

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.capacity


class Saturated(Exception):
    """Every node that has the model is at capacity: wait, then try again."""


def candidates(
    nodes: list[NodeView], model: str, exclude: frozenset[str] = frozenset()
) -> list[NodeView]:
    return [n for n in nodes if n.online and model in n.models and n.id not in exclude]


def tier(node: NodeView, model: str) -> int:
    """The preference before in-flight counts: healthy before cooling down, then loaded
    before not (lower is better)."""
    return 2 * node.cooling + (model not in node.loaded)


def _preference(model: str):
    return lambda n: (tier(n, model), n.in_flight, n.last_used, -n.vram_free, n.id)


def choose(
    nodes: list[NodeView],
    model: str,
    exclude: frozenset[str] = frozenset(),
    balance: int | None = None,
) -> NodeView | None:
    """The node to use, None when no online node has the model; Saturated when all are full.
    `balance`: prefer the holder of the longest prefix (None: no prefix routing)."""
    pool = candidates(nodes, model, exclude)
    if not pool:
        return None
    free = [n for n in pool if not n.saturated]
    if not free:
        raise Saturated(model)
    holder = prefix_holder(free, model, balance) if balance is not None else None
    return holder or min(free, key=_preference(model))


def prefix_holder(free: list[NodeView], model: str, balance: int) -> NodeView | None:
    """Among `free` nodes (with room) of the best tier, the one holding the longest prefix,
    unless it has more than `balance` requests in flight beyond the least loaded of them."""
    best = min(tier(n, model) for n in free)
    tiered = [n for n in free if tier(n, model) == best]
    longest = max(n.matched for n in tiered)
    if longest <= 0:
        return None
    holder = min((n for n in tiered if n.matched == longest), key=_preference(model))
    least = min(n.in_flight for n in tiered)
    return holder if holder.in_flight - least <= balance else None


def outcome(pool: list[NodeView], chosen: NodeView) -> str:
    """For the metrics: `hit` (the chosen node holds the longest prefix any candidate holds),
    `balanced` (another holds more, but load or health sent the request here), `miss` (no
    candidate holds any of it)."""
    longest = max((n.matched for n in pool), default=0)
    if longest <= 0:
        return "miss"
    return "hit" if chosen.matched >= longest else "balanced"


def ranked(
    nodes: list[NodeView], model: str, exclude: frozenset[str] = frozenset()
) -> list[NodeView]:
    """Every online node with the model, best first, those that look full last: for a claim
    made in Redis, which applies `tier` and the in-flight counts of every router there (the
    counts here may be a moment old). The first is `choose`'s node when one has room."""
    order = _preference(model)
    return sorted(candidates(nodes, model, exclude), key=lambda n: (n.saturated, order(n)))


def any_node(
    nodes: list[NodeView], model: str, exclude: frozenset[str] = frozenset()
) -> NodeView | None:
    """A node to ask something cheap about the model (its details): any online node that has
    it, ignoring capacity, healthy ones first. None when no online node has the model."""
    pool = candidates(nodes, model, exclude)
    return min(pool, key=lambda n: (n.cooling, n.in_flight, n.id)) if pool else None
