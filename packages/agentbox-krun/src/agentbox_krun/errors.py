"""Errors of the libkrun layer."""

from __future__ import annotations

import errno as errno_names
import os

from agentbox_state.errors import AgentboxError


class KrunError(AgentboxError):
    """A libkrun function returned ``-errno``; names the function and the errno with its text."""

    def __init__(self, func: str, err: int, *, hint: str | None = None):
        name = errno_names.errorcode.get(err, f"errno {err}")
        super().__init__(f"{func} failed: {name} ({os.strerror(err)})", hint=hint)
        self.func = func
        self.errno = err

    @classmethod
    def invalid(cls, message: str) -> KrunError:
        """Refused before calling libkrun (EINVAL), with our own message."""
        err = cls("(before the call)", errno_names.EINVAL)
        err.message = message
        err.args = (message,)
        return err

    @classmethod
    def wrap(cls, other: KrunError) -> KrunError:
        """The same failure as a subclass (to tell phases apart)."""
        err = cls(other.func, other.errno, hint=other.hint)
        err.message, err.args = other.message, other.args
        return err


class LaunchConfError(AgentboxError):
    """A launch.conf that cannot be used (the message names the file and the key)."""


class KrunLoadError(AgentboxError):
    """libkrun could not be loaded, or lacks a function we need."""
