"""``Record``: the frozen value type for modules on the command lines' start-up path.

``dataclasses`` costs about 30 ms to import on our reference host (it pulls in ``inspect`` and
``ast``), more than the whole start-up budget of ``agentbox paths``; so the few types that every
invocation builds are plain slotted classes on this base instead. Subclasses list their fields
in ``__slots__`` and set them in ``__init__`` through ``_set``. Modules off the start-up path use
frozen dataclasses as usual.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _set(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({shown})"
