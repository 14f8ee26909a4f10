"""The one error root of agentbox, and the errors of this layer.

Every library layer raises a subclass of :class:`AgentboxError`; only the command lines catch it,
print ``<prog>: <message>`` and ``hint: <hint>`` and exit with :attr:`AgentboxError.exit_code`.
"""

from __future__ import annotations


class AgentboxError(Exception):
    """An error a user can act on: what failed (``message``) and what to do (``hint``)."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the error picklable across a fork/helper boundary, hint and code included.
        return (_rebuild, (type(self), self.__dict__.copy()))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[AgentboxError], state: dict[str, object]) -> AgentboxError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class UsageError(AgentboxError):
    """Bad command-line or environment input; exits 2 like other command-line tools."""

    exit_code = 2


class ConfigError(AgentboxError):
    """A config file that cannot be used: names the file and, where there is one, the key path."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        key_path: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path
        self.key_path = key_path


class StatePathError(AgentboxError):
    """The state or config location cannot be determined."""


class LockHeldError(AgentboxError):
    """Another process holds a lock we need."""

    def __init__(self, message: str, *, hint: str | None = None, pid: int | None = None):
        super().__init__(message, hint=hint)
        self.pid = pid


class CommandError(AgentboxError):
    """An external command could not be started or failed."""

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...],
        returncode: int | None,
        stderr_tail: str = "",
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def render_error(prog: str, err: BaseException) -> str:
    """The text a command line prints for ``err``: ``prog: message`` and, if any, ``hint: ...``."""
    if isinstance(err, AgentboxError):
        lines = [f"{prog}: {err.message}"]
        if err.hint:
            lines.append(f"hint: {err.hint}")
    else:
        lines = [
            f"{prog}: internal error: {type(err).__name__}: {err}",
            f"hint: this is a bug in {prog}; rerun with --debug for the traceback and report it",
        ]
    return "\n".join(lines)
