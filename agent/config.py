"""Agent configuration: one TOML file, loaded once, validated, frozen.

Example::

    [agent]
    host_id = "gpu-node-17"            # default: the host name
    verifier = "verifier.example:8443"
    tcti = "device:/dev/tpmrm0"
    state_dir = "/var/lib/weightgate-agent"
    ak_handle = 0x81010002             # default
    reconnect_initial_seconds = 1.0    # default
    reconnect_max_seconds = 60.0       # default
    # insecure = true                  # plaintext gRPC, tests and demos only
    # The UEFI measured-boot event log, sent when the verifier asks (default shown).
    event_log_path = "/sys/kernel/security/tpm0/binary_bios_measurements"
    ima_log_path = "/sys/kernel/security/ima/binary_runtime_measurements"
    # GPU, SEV-SNP and TDX evidence sources: see agent.config_devices.
    gpu_evidence = "nvml"              # default; or "off", or "simulator" + gpu_simulator
    snp_evidence = "tsm"               # default; or "off", or "simulator" + snp_simulator
    tdx_evidence = "tsm"               # default; or "off", or "simulator" + tdx_simulator
    # The verifier's Ed25519 manifest-signing public key (PEM), pinned here; required
    # as soon as a model is configured.
    verifier_signing_key = "/etc/weightgate/verifier-signing.pub"

    [[agent.models]]                   # one table per model version this host serves
    manifest_digest = "<SHA-256 of the signed manifest, 64 hex digits>"
    target_dir = "/srv/models/frontier-x"

    [agent.tls]
    ca_certificate = "/etc/weightgate/ca.pem"
    certificate = "/etc/weightgate/agent.pem"
    private_key = "/etc/weightgate/agent.key"   # must not be group/world readable
    # server_name = "verifier.example"          # override the name checked in the cert

Relative paths are relative to the directory of the configuration file.
"""

from __future__ import annotations

import re
import socket
import stat
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent import config_devices
from agent.config_devices import (
    DEFAULT_SNP_TSM_DIR,
    DEVICE_KEYS,
    SnpSource,
    TdxSource,
    parse_device_keys,
)

_PERSISTENT_MIN, _PERSISTENT_MAX = 0x81000000, 0x81FFFFFF
_AGENT_KEYS = frozenset(
    {
        "host_id",
        "verifier",
        "tcti",
        "state_dir",
        "ak_handle",
        "insecure",
        "reconnect_initial_seconds",
        "reconnect_max_seconds",
        "tls",
        "verifier_signing_key",
        "models",
        "event_log_path",
        "ima_log_path",
        *DEVICE_KEYS,
    }
)
_MODEL_KEYS = frozenset({"manifest_digest", "target_dir"})
_DIGEST_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
_TLS_KEYS = frozenset({"ca_certificate", "certificate", "private_key", "server_name"})
_VERIFIER_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")

# Re-exported: the GPU collector names its source type from here.
GpuSource = config_devices.GpuSource


class ConfigError(Exception):
    """The configuration is unusable; the message names file, line and key."""


@dataclass(frozen=True)
class TlsConfig:
    ca_certificate: Path
    certificate: Path
    private_key: Path
    server_name: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """A model version this host should hold: its keys are asked for after each
    affirming verdict and its plaintext is written to ``target_dir``."""

    manifest_digest: bytes  # SHA-256 of the exact signed manifest bytes
    target_dir: Path


@dataclass(frozen=True)
class AgentConfig:
    host_id: str
    verifier: str  # "host:port"
    tcti: str
    state_dir: Path
    ak_handle: int = 0x81010002
    insecure: bool = False
    tls: TlsConfig | None = None  # None only when insecure
    reconnect_initial_seconds: float = 1.0
    reconnect_max_seconds: float = 60.0
    # PEM Ed25519 public key that manifests must verify under; set when models are.
    verifier_signing_key: Path | None = None
    models: tuple[ModelConfig, ...] = ()
    # The measured-boot event log sent when the verifier asks for it.
    event_log_path: Path = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
    # The IMA runtime measurement list (binary), sent when the verifier asks for it.
    ima_log_path: Path = Path("/sys/kernel/security/ima/binary_runtime_measurements")
    # Where GPU evidence comes from when the verifier asks for it.
    gpu_evidence: GpuSource = "nvml"
    gpu_simulator: Path | None = None  # a devsim fleet directory, with "simulator"
    # How long one collection over every GPU may take before the agent answers
    # "unavailable" (NVML calls cannot be interrupted; a hung one is not waited for).
    gpu_timeout_seconds: float = 20.0
    # Where SEV-SNP evidence comes from when the verifier asks for it (see
    # agent.config_devices for why "tsm" is the default).
    snp_evidence: SnpSource = "tsm"
    snp_simulator: Path | None = None  # a devsim.snp host directory, with "simulator"
    snp_tsm_dir: Path = DEFAULT_SNP_TSM_DIR  # configfs-tsm's report directory (SNP and TDX)
    # Where Intel TDX evidence comes from when the verifier asks for it.
    tdx_evidence: TdxSource = "tsm"
    tdx_simulator: Path | None = None  # a devsim.tdx guest directory, with "simulator"


def load_verifier_signing_key(path: Path) -> Ed25519PublicKey:
    """The pinned manifest-signing key; ValueError unless ``path`` holds an Ed25519 PEM."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate ``path``; raises ConfigError with a located message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    return parse_config(text, path=path)


def parse_config(text: str, *, path: Path) -> AgentConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    return _Validator(text, path).validate(doc)


class _Validator:
    def __init__(self, text: str, path: Path) -> None:
        self._lines = text.splitlines()
        self._path = path
        self._base = path.resolve().parent

    def validate(self, doc: dict[str, Any]) -> AgentConfig:
        unknown_top = sorted(set(doc) - {"agent"})
        if unknown_top:
            self._fail("", unknown_top[0], "unknown key (expected only the [agent] table)")
        agent = doc.get("agent")
        if not isinstance(agent, dict):
            raise ConfigError(f"{self._path}: missing [agent] table")
        self._reject_unknown("agent", agent, _AGENT_KEYS)

        host_id = self._string("agent", agent, "host_id", default=socket.gethostname())
        verifier = self._string("agent", agent, "verifier", example='"verifier.example:8443"')
        match = _VERIFIER_RE.match(verifier)
        if match is None or not 0 < int(match.group(1)) < 65536:
            self._fail("agent", "verifier", 'expected "host:port", like "verifier.example:8443"')
        tcti = self._string("agent", agent, "tcti", example='"swtpm:host=127.0.0.1,port=2321"')
        state_dir = self._path_value(self._string("agent", agent, "state_dir"))
        ak_handle = agent.get("ak_handle", 0x81010002)
        if (
            not isinstance(ak_handle, int)
            or isinstance(ak_handle, bool)
            or not _PERSISTENT_MIN <= ak_handle <= _PERSISTENT_MAX
        ):
            self._fail("agent", "ak_handle", "expected a persistent handle like 0x81010002")
        insecure = agent.get("insecure", False)
        if not isinstance(insecure, bool):
            self._fail("agent", "insecure", "expected true or false")
        initial = self._seconds(agent, "reconnect_initial_seconds", 1.0)
        maximum = self._seconds(agent, "reconnect_max_seconds", 60.0)
        if maximum < initial:
            self._fail(
                "agent", "reconnect_max_seconds", "must not be less than reconnect_initial_seconds"
            )

        tls_doc = agent.get("tls")
        tls: TlsConfig | None = None
        if insecure:
            if tls_doc is not None:
                self._fail("agent", "insecure", "insecure = true conflicts with [agent.tls]")
        elif not isinstance(tls_doc, dict):
            self._fail(
                "agent",
                "tls",
                "required unless insecure = true: add an [agent.tls] table with"
                " ca_certificate, certificate and private_key",
            )
        else:
            tls = self._tls(tls_doc)
        models = self._models(agent.get("models", []))
        signing_key: Path | None = None
        if "verifier_signing_key" in agent:
            signing_key = self._path_value(self._string("agent", agent, "verifier_signing_key"))
            try:
                load_verifier_signing_key(signing_key)
            except ValueError as e:
                self._fail("agent", "verifier_signing_key", str(e))
        elif models:
            self._fail(
                "agent",
                "verifier_signing_key",
                "required when [[agent.models]] are configured: the PEM Ed25519 public key"
                " that manifests are verified against",
            )
        event_log_path = AgentConfig.event_log_path
        if "event_log_path" in agent:
            event_log_path = self._path_value(self._string("agent", agent, "event_log_path"))
        ima_log_path = AgentConfig.ima_log_path
        if "ima_log_path" in agent:
            ima_log_path = self._path_value(self._string("agent", agent, "ima_log_path"))
        devices = parse_device_keys(
            agent,
            path=lambda key: self._path_value(self._string("agent", agent, key)),
            seconds=partial(self._seconds, agent),
            fail=partial(self._fail, "agent"),
        )
        return AgentConfig(
            **devices,
            event_log_path=event_log_path,
            ima_log_path=ima_log_path,
            host_id=host_id,
            verifier=verifier,
            tcti=tcti,
            state_dir=state_dir,
            ak_handle=ak_handle,
            insecure=insecure,
            tls=tls,
            reconnect_initial_seconds=initial,
            reconnect_max_seconds=maximum,
            verifier_signing_key=signing_key,
            models=models,
        )

    def _models(self, docs: object) -> tuple[ModelConfig, ...]:
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            self._fail("agent", "models", "expected [[agent.models]] tables")
        models: list[ModelConfig] = []
        for number, doc in enumerate(docs):
            table = f"agent.models#{number}"
            self._reject_unknown(table, doc, _MODEL_KEYS)
            digest = self._string(table, doc, "manifest_digest", example='"<64 hex digits>"')
            if not _DIGEST_RE.match(digest):
                self._fail(table, "manifest_digest", "expected 64 hex digits (SHA-256)")
            target = self._path_value(self._string(table, doc, "target_dir"))
            model = ModelConfig(manifest_digest=bytes.fromhex(digest), target_dir=target)
            for other in models:
                if other.manifest_digest == model.manifest_digest:
                    self._fail(table, "manifest_digest", "configured twice")
                if other.target_dir == target or {other.target_dir, target} & {
                    *other.target_dir.parents,
                    *target.parents,
                }:
                    # Erasing one release must never delete another's files.
                    self._fail(table, "target_dir", "overlaps another model's target_dir")
            models.append(model)
        return tuple(models)

    def _tls(self, doc: dict[str, Any]) -> TlsConfig:
        self._reject_unknown("agent.tls", doc, _TLS_KEYS)
        files = {}
        for key in ("ca_certificate", "certificate", "private_key"):
            file = self._path_value(self._string("agent.tls", doc, key))
            if not file.is_file():
                self._fail("agent.tls", key, f"{file}: no such file")
            files[key] = file
        mode = files["private_key"].stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            self._fail(
                "agent.tls",
                "private_key",
                f"{files['private_key']} is accessible by group or others"
                f" (mode {stat.S_IMODE(mode):04o}); chmod 600 it",
            )
        server_name = None
        if "server_name" in doc:
            server_name = self._string("agent.tls", doc, "server_name")
        return TlsConfig(server_name=server_name, **files)

    def _string(
        self,
        table: str,
        doc: dict[str, Any],
        key: str,
        *,
        default: str | None = None,
        example: str = '"..."',
    ) -> str:
        if key not in doc:
            if default is not None:
                return default
            self._fail(table, key, f"required key missing (e.g. {key} = {example})")
        value = doc[key]
        if not isinstance(value, str) or not value.strip():
            self._fail(table, key, f"expected a string like {example}")
        return value.strip()

    def _seconds(self, doc: dict[str, Any], key: str, default: float) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self._fail("agent", key, "expected a positive number of seconds")
        return float(value)

    def _path_value(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self._base / p

    def _reject_unknown(self, table: str, doc: dict[str, Any], known: frozenset[str]) -> None:
        for key in doc:
            if key not in known:
                self._fail(table, key, f"unknown key (known: {', '.join(sorted(known))})")

    def _fail(self, table: str, key: str, message: str) -> NoReturn:
        base, _, number = table.partition("#")
        if number:
            line = self._line_in_array(base, int(number), key)
            label = f"[[{base}]] #{int(number) + 1} {key}"
        else:
            line = self._line_of(table, key)
            label = f"[{table}] {key}" if table else key
        where = f"{self._path}:{line}" if line else str(self._path)
        raise ConfigError(f"{where}: {label}: {message}")

    def _line_in_array(self, table: str, number: int, key: str) -> int | None:
        """Line of ``key`` in the ``number``-th ``[[table]]``, else of that header."""
        array_re = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
        any_header_re = re.compile(r"^\s*\[")
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        seen, header_line = -1, None
        for line_number, line in enumerate(self._lines, start=1):
            if array_re.match(line):
                seen += 1
                if seen == number:
                    header_line = line_number
                continue
            if any_header_re.match(line) and seen >= number:
                seen = number + 1  # past our table: stop matching keys
            if seen == number and key_re.match(line):
                return line_number
        return header_line

    def _line_of(self, table: str, key: str) -> int | None:
        """Line of ``key`` in ``[table]``, else of the table header, else None."""
        current = ""
        header_line: int | None = None
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        dotted_re = re.compile(rf"^\s*{re.escape(table)}\.{re.escape(key)}\s*=")
        header_re = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
        for number, line in enumerate(self._lines, start=1):
            header = header_re.match(line)
            if header:
                current = header.group(1).replace(" ", "").replace('"', "")
                if current == table:
                    header_line = number
                elif current == f"{table}.{key}":
                    return number
                continue
            if (current == table and key_re.match(line)) or (
                current == "" and table and dotted_re.match(line)
            ):
                return number
        return header_line
