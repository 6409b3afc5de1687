"""Route handlers for this part of the node API (filled in by its issue)."""

routes: list = []
