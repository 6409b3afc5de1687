"""A node part with a start-up hook (filled in by its issue)."""


async def start(state) -> None:
    """Start this part; register its shutdown with state.on_stop."""
