"""Turn our errors into `Error: <message>` on stderr and the contract's exit codes."""

from __future__ import annotations

import click

from llmlb.errors import EXIT_ERROR, LlmlbError


def _debug() -> bool:
    from llmlb import settings

    return settings.debug()


def run_cli(cli: click.Group) -> int:
    try:
        code = cli.main(standalone_mode=False)
        # without standalone mode click returns ctx.exit()'s code instead of raising it
        return code if isinstance(code, int) else 0
    except LlmlbError as exc:
        if _debug():
            import traceback

            traceback.print_exc()
        click.echo(f"Error: {exc.message}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        # Usage mistakes are bad input: exit 1 (2 means "cannot connect" here).
        click.echo(f"Error: {exc.format_message()}", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if _debug():
            raise
        click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_ERROR
