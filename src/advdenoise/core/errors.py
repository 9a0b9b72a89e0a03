"""One exception type for every input problem a user can fix, and the CLI wrapper that reports it."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Sequence


class PipelineError(Exception):
    """A problem with the user's input (data, params, model file): reported as one line, exit 2."""


class ParamsError(PipelineError):
    """A params.yaml value is unknown, of the wrong type or out of range; the message names the key."""


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def entrypoint(
    main: Callable[[Sequence[str] | None], None],
) -> Callable[[Sequence[str] | None], int]:
    """Wrap a stage's main: user errors become one readable line and exit code 2.

    SIGTERM is turned into KeyboardInterrupt so that `finally` blocks and atomic writers clean up
    their temporary files when DVC or the user stops a stage.
    """

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread (e.g. called from a test runner thread)
            previous = None
        try:
            main(argv)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print(
                f"interrupted: {exc or 'SIGINT'}; files being written were discarded, outputs "
                "finished before the signal may remain (DVC re-runs the stage)",
                file=sys.stderr,
            )
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return 0

    return wrapper
