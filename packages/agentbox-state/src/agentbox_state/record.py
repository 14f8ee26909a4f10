"""``Record``: the frozen value type for modules on the command lines' start-up path.

``dataclasses`` costs about 30 ms to import on our reference host (it pulls in ``inspect`` and
``ast``), more than the whole start-up budget of ``agentbox paths``; so the few types that every
invocation builds derive from this base instead. A subclass declares each field once, as a class
annotation (with a class-level default when it has one); the base turns the annotations into
``__slots__`` and an ``__init__`` that takes the fields in declaration order, checks the keywords
against them and sets them once. Instances are immutable, compare and hash by their fields, and
show them in ``repr`` (by name, as the slotted classes before them did). ``kw_only=True`` in
the class statement makes every field keyword-only. A subclass may define ``__post_init__`` to
normalise a field (through ``object.__setattr__``).

For mypy the base is a ``dataclass_transform`` (from typing-extensions, for ``frozen_default``,
which ``typing`` has from Python 3.12 on), applied only under ``TYPE_CHECKING`` so nothing is
imported at start-up: callers are checked like dataclass constructors. Modules off the start-up
path use frozen dataclasses as usual.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda cls: cls


_NO_DEFAULT = object()


class _RecordMeta(type):
    """Reads a new class's own annotations: its fields, in order, with their defaults."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object], **kwargs: object
    ) -> _RecordMeta:
        kw_only = bool(kwargs.pop("kw_only", False))
        inherited: tuple[tuple[str, object], ...] = ()
        for base in bases:
            inherited += getattr(base, "_fields", ())
        annotations = namespace.get("__annotations__", {})
        if "__annotations__" not in namespace and "__annotate__" in namespace:
            # Python 3.14's lazy annotations: the fields would be silently lost
            raise TypeError(f"{name}: declare Record fields under `from __future__ import "
                            "annotations`")  # fmt: skip
        assert isinstance(annotations, dict)
        own = tuple(
            (field, namespace.pop(field, _NO_DEFAULT))
            for field, kind in annotations.items()
            if not (isinstance(kind, str) and kind.startswith("ClassVar"))
        )
        fields = inherited + own
        seen_default = False
        for field, default in fields:
            if default is not _NO_DEFAULT:
                seen_default = True
            elif seen_default and not kw_only:
                raise TypeError(f"{name}: field {field} without a default follows one with it")
        namespace["__slots__"] = tuple(field for field, _ in own)
        namespace["_fields"] = fields
        namespace["_names"] = tuple(field for field, _ in fields)
        namespace["_positional"] = 0 if kw_only else len(fields)
        return super().__new__(mcs, name, bases, namespace, **kwargs)


@dataclass_transform(frozen_default=True, eq_default=True)
class Record(metaclass=_RecordMeta):
    __slots__ = ()
    _fields: ClassVar[tuple[tuple[str, object], ...]]
    _names: ClassVar[tuple[str, ...]]
    _positional: ClassVar[int]

    def __init__(self, *args: object, **kwargs: object) -> None:
        cls = type(self)
        if len(args) > cls._positional:
            raise TypeError(
                f"{cls.__name__}() takes {cls._positional} positional arguments, {len(args)} given"
            )
        for name in kwargs:
            if name not in cls._names:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        setter = object.__setattr__
        for i, (name, default) in enumerate(cls._fields):
            if i < len(args):
                if name in kwargs:
                    raise TypeError(f"{cls.__name__}() got multiple values for {name!r}")
                value = args[i]
            elif name in kwargs:
                value = kwargs[name]
            elif default is not _NO_DEFAULT:
                value = default
            else:
                raise TypeError(f"{cls.__name__}() missing the argument {name!r}")
            setter(self, name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in sorted(self._names))
        return f"{type(self).__name__}({shown})"
