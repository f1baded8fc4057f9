"""Launch a private software TPM (swtpm) for tests and the demo.

Everything the TPM needs lives under one work directory: its state, the local
EK certificate authority that signs its EK certificate, and its log. Nothing
system-wide (``/etc/swtpm*``, ``/var/lib/swtpm-localca``) is read or written,
so several TPMs can run side by side, as root or not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

_HOST = "127.0.0.1"
# swtpm_localca creates a self-signed root CA under these names in its statedir,
# then an intermediate "swtpm-localca" CA (signingkey / issuercert of its config)
# that signs the EK and platform certificates.
_ROOT_CA_CERT = "swtpm-localca-rootca-cert.pem"
_ISSUER_CERT = "issuercert.pem"
_SIGNING_KEY = "signkey.pem"
_START_ATTEMPTS = 5  # free-port races are rare; a few retries make them harmless
_SETUP_TIMEOUT_S = 60.0
_LISTEN_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class SwtpmError(RuntimeError):
    """swtpm or swtpm_setup failed; the message carries their output."""


@dataclass
class SwtpmProcess:
    """A running swtpm. ``stop()`` (or leaving the ``with`` block) kills it by pid."""

    pid: int
    server_port: int
    ctrl_port: int
    state_dir: Path
    ek_ca_certificates: tuple[Path, ...]  # PEM: the local root CA, then the intermediate
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def tcti(self) -> str:
        return f"swtpm:host={_HOST},port={self.server_port}"

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and wait for it to exit."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if self._popen is not None:
            try:
                self._popen.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
            return
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while _alive(self.pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            time.sleep(0.05)

    def restart(self) -> None:
        """Power-cycle the TPM: stop it, then serve the same state on the same ports.

        swtpm sends itself TPM2_Startup(CLEAR) (``--flags startup-clear``), which is
        a TPM Reset: resetCount goes up and the PCRs start over, as after a reboot.
        Persistent objects and NV indices survive.
        """
        self.stop()
        work_dir = self.state_dir.parent
        log = work_dir / "swtpm.log"
        error: str | None = None
        # The ports were ours a moment ago; retry briefly in case the kernel is slow
        # to release them.
        for _ in range(_START_ATTEMPTS):
            proc = _launch(work_dir, self.state_dir, self.server_port, self.ctrl_port)
            error = _wait_listening(proc, self.server_port, log)
            if error is None:
                self.pid = proc.pid
                self._popen = proc
                return
            time.sleep(0.2)
        raise SwtpmError(f"swtpm did not restart on port {self.server_port}: {error}")

    def __enter__(self) -> SwtpmProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_swtpm(
    work_dir: Path, *, with_ek_certificate: bool = True, pcr_banks: tuple[str, ...] = ("sha256",)
) -> SwtpmProcess:
    """Manufacture a TPM in ``work_dir`` and serve it on free loopback ports.

    ``pcr_banks``: the PCR banks allocated at manufacture (swtpm_setup names).

    With ``with_ek_certificate`` the TPM gets an RSA-2048 and an ECC EK certificate
    (NV 0x01c00002 / 0x01c0000a) and a platform certificate, signed by a local CA
    whose PEM files are returned in ``ek_ca_certificates``.
    """
    for tool in ("swtpm", "swtpm_setup") + (("swtpm_localca",) if with_ek_certificate else ()):
        if shutil.which(tool) is None:
            raise SwtpmError(
                f"{tool} not found on PATH (install the swtpm and swtpm-tools packages)"
            )
    work_dir = Path(work_dir).resolve()
    state_dir = work_dir / "state"
    ca_dir = work_dir / "localca"
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    setup_conf = _write_setup_config(work_dir, ca_dir, pcr_banks)
    _manufacture(work_dir, state_dir, setup_conf, with_ek_certificate=with_ek_certificate)
    ca_certs: tuple[Path, ...] = ()
    if with_ek_certificate:
        ca_certs = (ca_dir / _ROOT_CA_CERT, ca_dir / _ISSUER_CERT)
        missing = [str(p) for p in ca_certs if not p.is_file()]
        if missing:
            raise SwtpmError(f"swtpm_localca did not create {', '.join(missing)}")

    last_error = ""
    for _ in range(_START_ATTEMPTS):
        server_port, ctrl_port = _free_port_pair()
        proc = _launch(work_dir, state_dir, server_port, ctrl_port)
        error = _wait_listening(proc, server_port, work_dir / "swtpm.log")
        if error is None:
            return SwtpmProcess(
                pid=proc.pid,
                server_port=server_port,
                ctrl_port=ctrl_port,
                state_dir=state_dir,
                ek_ca_certificates=ca_certs,
                _popen=proc,
            )
        last_error = error
    raise SwtpmError(f"swtpm did not start after {_START_ATTEMPTS} attempts: {last_error}")


def _write_setup_config(work_dir: Path, ca_dir: Path, pcr_banks: tuple[str, ...]) -> Path:
    localca_conf = work_dir / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca_dir}\n"
        f"signingkey = {ca_dir / _SIGNING_KEY}\n"
        f"issuercert = {ca_dir / _ISSUER_CERT}\n"
        f"certserial = {ca_dir / 'certserial'}\n"
    )
    localca_options = work_dir / "swtpm-localca.options"
    localca_options.write_text(
        "--platform-manufacturer weightgate\n--platform-version 2.1\n--platform-model swtpm\n"
    )
    setup_conf = work_dir / "swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca') or '/usr/bin/swtpm_localca'}\n"
        f"create_certs_tool_config = {localca_conf}\n"
        f"create_certs_tool_options = {localca_options}\n"
        f"active_pcr_banks = {','.join(pcr_banks)}\n"
    )
    return setup_conf


def _manufacture(
    work_dir: Path, state_dir: Path, setup_conf: Path, *, with_ek_certificate: bool
) -> None:
    cmd = [
        "swtpm_setup",
        "--tpm2",
        "--tpmstate",
        str(state_dir),
        "--config",
        str(setup_conf),
        "--lock-nvram",
        "--overwrite",
    ]
    if with_ek_certificate:
        cmd += ["--create-ek-cert", "--create-platform-cert"]
    # XDG_CONFIG_HOME keeps swtpm_setup away from the user's ~/.config/swtpm_setup.
    env = {**os.environ, "XDG_CONFIG_HOME": str(work_dir), "TMPDIR": str(work_dir)}
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd,
            capture_output=True,
            text=True,
            timeout=_SETUP_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise SwtpmError(f"swtpm_setup timed out after {_SETUP_TIMEOUT_S}s") from e
    if result.returncode != 0:
        raise SwtpmError(
            f"swtpm_setup failed (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def _free_port_pair() -> tuple[int, int]:
    """Two consecutive free TCP ports on the loopback (swtpm's server and control)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((_HOST, 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _port_free(port) and _port_free(port + 1):
            return port, port + 1
    raise SwtpmError("no two consecutive free TCP ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def _launch(
    work_dir: Path, state_dir: Path, server_port: int, ctrl_port: int
) -> subprocess.Popen[bytes]:
    cmd = [
        "swtpm",
        "socket",
        "--tpm2",
        "--server",
        f"type=tcp,port={server_port},bindaddr={_HOST}",
        "--ctrl",
        f"type=tcp,port={ctrl_port},bindaddr={_HOST}",
        "--tpmstate",
        f"dir={state_dir}",
        "--flags",
        "not-need-init,startup-clear",
        "--pid",
        f"file={work_dir / 'swtpm.pid'}",
    ]
    with (work_dir / "swtpm.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> str | None:
    """None once ``port`` accepts connections; otherwise why swtpm is not serving."""
    deadline = time.monotonic() + _LISTEN_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"swtpm exited with {proc.returncode}: {_read_log(log)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((_HOST, port)) == 0:
                return None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return f"swtpm did not listen on {_HOST}:{port} within {_LISTEN_TIMEOUT_S}s: {_read_log(log)}"


def _read_log(log: Path) -> str:
    try:
        return log.read_text(errors="replace").strip() or "(no output)"
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers signal 0; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
