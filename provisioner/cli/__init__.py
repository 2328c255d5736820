"""The ``provisioner`` command line. Heavy modules are imported inside commands, so that
``provisioner --help`` stays fast; exit codes are decided in :mod:`provisioner.cli.exits`."""

from __future__ import annotations

import sys

from provisioner.cli.app import app


def main(argv: list[str] | None = None) -> None:
    import click

    from provisioner.cli import exits
    from provisioner.cli.app import report_error

    import typer

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="provisioner", standalone_mode=False)
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.exceptions.Abort:
        report_error("aborted", None)
        code = exits.ERROR
    except click.exceptions.ClickException as error:
        error.show()
        code = exits.ERROR  # usage errors are bad input: exit 1, never 2 ("changes")
    except KeyboardInterrupt:
        report_error("interrupted", None)
        code = exits.ERROR
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into codes
        code = exits.code_for(error)
        if exits.is_known(error):
            report_error(*exits.describe(error))
        else:
            path = exits.write_crash_log(error)
            report_error(f"internal error: {type(error).__name__}: {error}",
                         f"this is a bug; the traceback is in {path}")
    sys.exit(code if isinstance(code, int) else 0)
