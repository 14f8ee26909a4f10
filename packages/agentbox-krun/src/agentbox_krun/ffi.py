"""libkrun's C API as data, loaded on first use (never at import).

``SIGNATURES`` lists every function we call with the exact C types of ``libkrun.h``; every
call returns ``int32_t``, negative meaning ``-errno``, which ``Krun`` turns into ``KrunError``
naming the function and the errno. Optional functions may be missing from a build: using one
that is gives a clear error; ``set_root`` falls back to ``krun_add_virtiofs(ctx, "/dev/root",
path)``, which is what it does inside libkrun (the PyPI fork lacks ``krun_set_root``).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Mapping, Sequence

from agentbox_krun.errors import KrunError, KrunLoadError

u8, u32, u64, i32 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32
cint, cbool, cstr = ctypes.c_int, ctypes.c_bool, ctypes.c_char_p
cstr_array = ctypes.POINTER(ctypes.c_char_p)

SIGNATURES: dict[str, tuple[object, ...]] = {
    "krun_set_log_level": (u32,),
    "krun_init_log": (cint, u32, u32, u32),
    "krun_create_ctx": (),
    "krun_free_ctx": (u32,),
    "krun_set_vm_config": (u32, u8, u32),
    "krun_set_nested_virt": (u32, cbool),
    "krun_check_nested_virt": (),
    "krun_set_root": (u32, cstr),
    "krun_add_disk": (u32, cstr, cstr, cbool),
    "krun_disable_implicit_console": (u32,),
    "krun_add_virtio_console_default": (u32, cint, cint, cint),
    "krun_add_virtiofs": (u32, cstr, cstr),
    "krun_add_virtiofs3": (u32, cstr, cstr, u64, cbool),
    "krun_add_net_unixstream": (u32, cstr, cint, ctypes.POINTER(u8), u32, u32),
    "krun_set_port_map": (u32, cstr_array),
    "krun_set_workdir": (u32, cstr),
    "krun_set_exec": (u32, cstr, cstr_array, cstr_array),
    "krun_start_enter": (u32,),
}
REQUIRED = ("krun_create_ctx", "krun_free_ctx", "krun_set_vm_config", "krun_add_disk",
            "krun_set_workdir", "krun_set_exec", "krun_start_enter")  # fmt: skip
SONAMES = ("libkrun.so.1", "libkrun.so")


def candidates(environ: Mapping[str, str], env_var: str) -> list[str]:
    override = environ.get(env_var, "").strip()
    return [override] if override else list(SONAMES)


def load(environ: Mapping[str, str], env_var: str) -> Krun:
    """Load libkrun: ``env_var`` when set, else the sonames; every path tried is named."""
    tried = []
    for name in candidates(environ, env_var):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOW)
        except OSError as err:
            tried.append(f"{name} ({err})")
            continue
        return Krun(lib, name)
    raise KrunLoadError(
        "cannot load libkrun; tried: " + "; ".join(tried),
        hint=f"install libkrun and libkrunfw (or set {env_var} to the library's path)",
    )


def _cstr(value: str, what: str) -> bytes:
    if "\0" in value:
        raise KrunError.invalid(f"{what} contains a NUL byte: {value!r}")
    return value.encode("utf-8")


def _array(values: Sequence[str], what: str) -> ctypes.Array[ctypes.c_char_p]:
    items = [_cstr(v, what) for v in values]
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


class Krun:
    """The loaded library with one checked method per call we make."""

    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.name = name
        self._fns: dict[str, Callable[..., int]] = {}
        missing = []
        for fn, argtypes in SIGNATURES.items():
            try:
                func = getattr(lib, fn)
            except AttributeError:
                if fn in REQUIRED:
                    missing.append(fn)
                continue
            func.argtypes = list(argtypes)
            func.restype = i32  # ctypes returns a Python int for c_int32
            self._fns[fn] = func
        if missing:
            raise KrunLoadError(f"{name} lacks required libkrun functions: {', '.join(missing)}",
                                hint="install a newer libkrun")  # fmt: skip

    def has(self, fn: str) -> bool:
        return fn in self._fns

    def call(self, fn: str, *args: object) -> int:
        if fn not in self._fns:
            raise KrunError.invalid(f"{self.name} has no {fn}: this feature needs a newer libkrun")
        rc: int = self._fns[fn](*args)
        if rc < 0:
            raise KrunError(fn, -rc)
        return rc

    # -- the calls, in libkrun's terms --------------------------------------------------------
    def set_log_level(self, level: int) -> None:
        self.call("krun_set_log_level", level)

    def init_log(self, target_fd: int, level: int, style: int, options: int) -> None:
        self.call("krun_init_log", target_fd, level, style, options)

    def check_nested_virt(self) -> bool:
        """Whether the VM can run VMs itself. Linux builds answer EOPNOTSUPP: that is a no."""
        try:
            return self.call("krun_check_nested_virt") == 1
        except KrunError as err:
            if err.errno == errno.EOPNOTSUPP:
                return False
            raise

    def set_nested_virt(self, ctx: int, enabled: bool) -> None:
        self.call("krun_set_nested_virt", ctx, enabled)

    def create_ctx(self) -> int:
        return self.call("krun_create_ctx")

    def free_ctx(self, ctx: int) -> None:
        self.call("krun_free_ctx", ctx)

    def set_vm_config(self, ctx: int, vcpus: int, ram_mib: int) -> None:
        if not 0 < vcpus < 256:
            raise KrunError.invalid(f"vcpus {vcpus} does not fit libkrun's uint8")
        self.call("krun_set_vm_config", ctx, vcpus, ram_mib)

    def set_root(self, ctx: int, path: str) -> None:
        if self.has("krun_set_root"):
            self.call("krun_set_root", ctx, _cstr(path, "root"))
        else:
            self.call("krun_add_virtiofs", ctx, b"/dev/root", _cstr(path, "root"))

    def add_disk(self, ctx: int, block_id: str, path: str, readonly: bool) -> None:
        self.call("krun_add_disk", ctx, _cstr(block_id, "disk id"), _cstr(path, "disk path"),
                  readonly)  # fmt: skip

    def disable_implicit_console(self, ctx: int) -> None:
        self.call("krun_disable_implicit_console", ctx)

    def add_virtio_console_default(self, ctx: int, fd_in: int, fd_out: int, fd_err: int) -> None:
        self.call("krun_add_virtio_console_default", ctx, fd_in, fd_out, fd_err)

    def add_virtiofs(self, ctx: int, tag: str, path: str, readonly: bool = False) -> None:
        tag_b, path_b = _cstr(tag, "virtiofs tag"), _cstr(path, "virtiofs path")
        if self.has("krun_add_virtiofs3"):
            self.call("krun_add_virtiofs3", ctx, tag_b, path_b, 0, readonly)
        elif not readonly:
            self.call("krun_add_virtiofs", ctx, tag_b, path_b)
        else:
            raise KrunError.invalid(f"{self.name} cannot share {path} read-only (no virtiofs3)")

    def set_workdir(self, ctx: int, path: str) -> None:
        self.call("krun_set_workdir", ctx, _cstr(path, "workdir"))

    def set_exec(self, ctx: int, path: str, argv: Sequence[str], env: Sequence[str]) -> None:
        self.call("krun_set_exec", ctx, _cstr(path, "exec path"), _array(argv, "argv"),
                  _array(env, "env"))  # fmt: skip

    def start_enter(self, ctx: int) -> int:
        """Does not return when the VM starts: libkrun exits the process with its status."""
        return self.call("krun_start_enter", ctx)
