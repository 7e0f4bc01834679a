"""One error type for everything a user can cause or fix.

Every failure that reaches the CLI is a ``NixsnakeError`` carrying a sysexits code, so
the CLI can print one line and exit with a code that scripts and CI can act on, instead
of a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """sysexits.h codes used by nixsnake."""

    OK = 0
    USAGE = 64  # bad command line (unknown option, missing argument)
    DATAERR = 65  # bad env file / lock
    NOINPUT = 66  # missing file
    UNAVAILABLE = 69  # a needed tool or service is missing / unreachable
    SOFTWARE = 70  # internal error (a bug, or nix failing on a valid spec)
    TEMPFAIL = 75  # try again later (lock held, ...)
    NOPERM = 77  # refused for security reasons (tamperable store)
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what shells report


class NixsnakeError(Exception):
    """A failure with a message meant for the user and a sysexits code."""

    def __init__(self, message: str, code: Exit = Exit.SOFTWARE, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = Exit(code)
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class SpecError(NixsnakeError):
    """The env file (or its lock) is invalid: names the file, the key and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str):
        self.file = file
        self.key = key
        self.problem = problem = " ".join(problem.splitlines())  # always one line
        self.fix = fix
        if not key.isprintable():  # a key that is itself bad input: shown quoted, on one line
            key = repr(key)
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}; fix: {fix}", Exit.DATAERR)

    def __str__(self) -> str:
        return self.message


class MissingFileError(NixsnakeError):
    def __init__(self, path: str, fix: str):
        super().__init__(f"{path}: no such file; fix: {fix}", Exit.NOINPUT)


class InternalError(NixsnakeError):
    """A bug (any other exception): still one line and exit 70."""

    def __init__(self, exc: BaseException):
        super().__init__(
            f"internal error: {exc.__class__.__name__}: {exc} (set NIXSNAKE_DEBUG=1 for a traceback)", Exit.SOFTWARE
        )


class UnreadableFileError(NixsnakeError):
    def __init__(self, path: str, why: str, fix: str):
        super().__init__(f"{path}: cannot read it ({why}); fix: {fix}", Exit.NOINPUT)


class Interrupted(NixsnakeError):
    """The user pressed Ctrl-C: raised in worker threads, which never see KeyboardInterrupt."""

    def __init__(self) -> None:
        super().__init__("interrupted", Exit.INTERRUPTED)


class ToolMissingError(NixsnakeError):
    def __init__(self, tool: str, hint: str):
        super().__init__(f"required tool '{tool}' not found or not usable", Exit.UNAVAILABLE, hint)
