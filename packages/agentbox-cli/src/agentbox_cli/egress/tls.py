"""The per-user CA of the egress proxy and the certificates it makes for the hosts whose
requests it must read (the hosts of a secret), with the real ``openssl`` (req(1), x509(1)).

The CA lives in agentbox's state base (key 0600; no workspace may hold the state base), made
once. A leaf certificate per host and task is made in the task's private dir, removed after
it. The sandbox sees the CA's certificate only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from agentbox_state.runner import Runner

CA_SUBJECT = "/CN=agentbox egress proxy CA"
CA_DAYS = "3650"
LEAF_DAYS = "30"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def ca_argv(key: Path, cert: Path) -> list[str]:
    """req(1): a self-signed CA certificate (``-x509``) with a new P-256 key, unencrypted."""
    return ["openssl", "req", "-x509", *EC_KEY, "-keyout", os.fspath(key), "-out",
            os.fspath(cert), "-days", CA_DAYS, "-subj", CA_SUBJECT,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"]  # fmt: skip


def leaf_config(host: str) -> str:
    """The req(1)/x509v3_config(5) file of a server certificate for ``host``."""
    return ("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"
            f"CN = {host}\n[ext]\nbasicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
            f"subjectAltName = DNS:{host}\n")  # fmt: skip


def leaf_argvs(ca_dir: Path, out: Path, host: str) -> list[list[str]]:
    """A key and request for ``host`` (req(1)), then the certificate the CA signs (x509(1))."""
    stem = os.fspath(out / host)
    return [
        ["openssl", "req", "-new", *EC_KEY, "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
         "-config", f"{stem}.cnf"],
        ["openssl", "x509", "-req", "-in", f"{stem}.csr", "-CA", os.fspath(ca_dir / "ca.pem"),
         "-CAkey", os.fspath(ca_dir / "ca.key"), "-set_serial", f"0x{secrets.token_hex(16)}",
         "-days", LEAF_DAYS, "-extfile", f"{stem}.cnf", "-extensions", "ext", "-out",
         f"{stem}.pem"],
    ]  # fmt: skip


def ensure_ca(ca_dir: Path, runner: Runner) -> Path:
    """The CA's certificate, the CA made first when there is none (its key 0600)."""
    cert, key = ca_dir / "ca.pem", ca_dir / "ca.key"
    if cert.is_file() and key.is_file():
        return cert
    import shutil
    import tempfile

    ca_dir.parent.mkdir(parents=True, exist_ok=True)
    # made aside and renamed into place: two first runs at once keep one whole pair
    made = Path(tempfile.mkdtemp(prefix=f".{ca_dir.name}-", dir=ca_dir.parent))
    old = os.umask(0o077)
    try:
        runner.run(ca_argv(made / "ca.key", made / "ca.pem"))
        (made / "ca.key").chmod(0o600)
        try:
            made.rename(ca_dir)
        except OSError:  # another run's CA is there now: it is the one
            if not (cert.is_file() and key.is_file()):
                raise
    finally:
        os.umask(old)
        shutil.rmtree(made, ignore_errors=True)
    return cert


def make_leaf(ca_dir: Path, out: Path, host: str, runner: Runner) -> tuple[Path, Path]:
    """A certificate and key for ``host`` in ``out`` (0700), signed by the CA."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    (out / f"{host}.cnf").write_text(leaf_config(host), encoding="utf-8")
    old = os.umask(0o077)
    try:
        for argv in leaf_argvs(ca_dir, out, host):
            runner.run(argv)
    finally:
        os.umask(old)
    return out / f"{host}.pem", out / f"{host}.key"


def system_bundle() -> Path | None:
    """The host's CA bundle (Debian's, else OpenSSL's default file), to extend with ours."""
    import ssl

    for candidate in ("/etc/ssl/certs/ca-certificates.crt", ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None
