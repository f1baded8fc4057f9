"""Record every Operator RPC in the audit log: :func:`audited` wraps a servicer handler.

The record is committed before the client hears the outcome. A handler gets a
stand-in for its context whose ``abort`` first appends the refusal (status
code name and reason) and only then sends the status, so a refused request
leaves exactly its audit record; a handler that returns has its "ok" record
appended before the response goes out. If the record cannot be written, the
client gets INTERNAL instead of the response: no outcome without its record.
(A write RPC's own transaction has committed by then; making the two one
transaction is left to the authorization work.)

Authorization runs here too, before the handler: a caller whose roles may not
call the RPC (verifier.authz) is refused PERMISSION_DENIED through the same
stand-in, so the refusal is audited and the handler never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar, cast

import grpc

from verifier.audit.chain import OK, AuditEntry, AuditRecord
from verifier.authz import OPERATOR, Authorizer, method_name
from verifier.store import Store

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]
Fields = Mapping[str, str]
# Bounds on what a request can make us store: ids are at most 128 characters
# when valid, and an invalid request is recorded too, so its fields are cut.
TARGET_VALUE_LIMIT = 256
DETAIL_VALUE_LIMIT = 4096
_CUT = "...[cut]"
AUDIT_UNAVAILABLE = "audit log unavailable: the outcome of this request was not recorded"


def bounded(fields: Fields, limit: int) -> dict[str, str]:
    return {k[:limit]: v if len(v) <= limit else v[:limit] + _CUT for k, v in fields.items()}


def actor_of(context: Context, *, insecure: bool) -> str:
    """Who is calling: the client certificate's CN under mutual TLS, else
    "insecure:<peer>" on a plaintext server, else "unidentified:<peer>"."""
    auth = context.auth_context()
    names = list(auth.get("x509_common_name", ()))
    if names:
        return names[0].decode("utf-8", "replace")
    prefix = "insecure" if insecure else "unidentified"
    return f"{prefix}:{context.peer()}"


class AuditRecorder:
    """Appends the servicer's audit records; shared by all its handlers."""

    def __init__(self, store: Store, *, insecure: bool, now: Callable[[], datetime]) -> None:
        self._store = store
        self._insecure = insecure
        self._now = now

    def entry(
        self, context: Context, *, action: str, target: Fields, outcome: str, details: Fields
    ) -> AuditEntry:
        return AuditEntry(
            at=self._now(),
            actor=actor_of(context, insecure=self._insecure),
            action=action,
            target=target,
            outcome=outcome,
            details=details,
        )

    async def append(
        self, context: Context, *, action: str, target: Fields, outcome: str, details: Fields
    ) -> AuditRecord:
        return await asyncio.to_thread(
            self._store.append_audit,
            at=self._now(),
            actor=actor_of(context, insecure=self._insecure),
            action=action,
            target=target,
            outcome=outcome,
            details=details,
        )


class _Call:
    """One audited RPC: appends its one record, whichever way it ends."""

    def __init__(
        self, recorder: AuditRecorder, context: Context, action: str, target: Fields, extra: Fields
    ) -> None:
        self.recorder = recorder
        self.context = context
        self.action = action
        self.target = bounded(target, TARGET_VALUE_LIMIT)
        self.extra = bounded(extra, DETAIL_VALUE_LIMIT)
        self.recorded = False

    async def finish(self, outcome: str, reason: str | None = None) -> bool:
        """Append the record (once); False when it could not be written."""
        if self.recorded:
            return True
        self.recorded = True
        details = dict(self.extra)
        if reason is not None:
            details["reason"] = reason
        try:
            await self.recorder.append(
                self.context,
                action=self.action,
                target=self.target,
                outcome=outcome,
                details=bounded(details, DETAIL_VALUE_LIMIT),
            )
        except Exception:
            log.exception("cannot append the audit record of %s (%s)", self.action, outcome)
            return False
        return True


def transactional_entry(
    context: Context, details: Fields, *, target: Fields | None = None
) -> AuditEntry:
    """The "ok" record of the audited call behind ``context``, for a store method to
    append in the same transaction as the change it makes (change and record
    commit together or not at all). Once that transaction has committed, call
    :func:`recorded_in_transaction`, or the call would be recorded twice."""
    call = _call_of(context)
    merged = bounded({**call.extra, **details}, DETAIL_VALUE_LIMIT)
    targets = bounded({**call.target, **(target or {})}, TARGET_VALUE_LIMIT)
    return call.recorder.entry(
        call.context, action=call.action, target=targets, outcome=OK, details=merged
    )


def recorded_in_transaction(context: Context) -> None:
    """The call's record was appended with its change (see transactional_entry)."""
    _call_of(context).recorded = True


def _call_of(context: Context) -> _Call:
    if not isinstance(context, _AuditedContext):
        raise TypeError("only an @audited handler's context carries its audit record")
    return context._call


class _AuditedContext:
    """The handler's context: like the real one, but a refusal is recorded before it is sent."""

    def __init__(self, call: _Call) -> None:
        self._call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call.context, name)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        if not await self._call.finish(code.name, details):
            code, details = grpc.StatusCode.INTERNAL, AUDIT_UNAVAILABLE
        await self._call.context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        if not await self._call.finish(status.code.name, status.details):
            await self._call.context.abort(grpc.StatusCode.INTERNAL, AUDIT_UNAVAILABLE)
        await self._call.context.abort_with_status(status)


class Audited(Protocol):
    """What :func:`audited` needs of the servicer."""

    _audit: AuditRecorder
    _authz: Authorizer


S = TypeVar("S", bound=Audited)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, Context], Awaitable[Resp]]


def request_fields(request: object, paths: tuple[str, ...]) -> dict[str, str]:
    """The named request fields as text: bytes in hex, repeated fields joined by ",".

    A dotted path reads a nested message (``site.site_id``); the key is its last part.
    """
    fields: dict[str, str] = {}
    for path in paths:
        value: Any = request
        for part in path.split("."):
            value = getattr(value, part)
        fields[path.rsplit(".", 1)[-1]] = _text(value)
    return fields


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int):
        return str(value)
    return ",".join(_text(v) for v in value)


class audited:  # noqa: N801 - used as a decorator, named like one
    """Decorate an async unary handler so each call appends exactly one audit record.

    The action is the handler's name (the RPC's). ``target`` names the request
    fields that identify what the call acts on, ``digests`` bytes fields put in
    the target as ``<name>_sha256`` (a manifest is too long to keep; its digest
    names it), ``details`` other parameters
    worth keeping; only named fields are recorded, so secrets never are.
    The outcome is "ok", the status code name of an abort (its reason in
    details["reason"]), CANCELLED, or INTERNAL for an unexpected exception
    (its type as the reason).
    """

    def __init__(
        self, *target: str, digests: tuple[str, ...] = (), details: tuple[str, ...] = ()
    ) -> None:
        self._target = target
        self._digests = digests
        self._details = details

    def __call__(self, handler: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
        action = handler.__name__
        target_of, digests_of, details_of = self._target, self._digests, self._details

        @functools.wraps(handler)
        async def run(self: S, request: Req, context: Context) -> Resp:
            target = request_fields(request, target_of)
            for name in digests_of:
                target[f"{name}_sha256"] = hashlib.sha256(getattr(request, name)).hexdigest()
            details = request_fields(request, details_of)
            async with audited_call(
                self, context, action=action, target=target, details=details
            ) as recording:
                return await handler(self, request, recording)

        return run


@contextlib.asynccontextmanager
async def audited_call(
    servicer: Audited, context: Context, *, action: str, target: Fields, details: Fields
) -> AsyncIterator[Context]:
    """One audit record for one call: a unary handler's (:class:`audited` runs it
    around the handler), or a server-streaming handler's opening of the stream.

    Authorizes the caller for ``action``, then runs the block with the recording
    stand-in for ``context`` (as :func:`audited` gives a unary handler): a refusal
    or failure inside the block is recorded with its outcome, and leaving the
    block normally records "ok" before the stream's first message goes out.
    What the stream sends afterwards is not recorded. ``target`` and ``details``
    are bounded here.
    """
    call = _Call(servicer._audit, context, action, target, details)
    recording = cast(Context, _AuditedContext(call))
    try:
        await servicer._authz.require(recording, method_name(OPERATOR, action))
        yield recording
    except grpc.aio.AbortError:
        await call.finish(grpc.StatusCode.UNKNOWN.name, "aborted without a record")
        raise
    except asyncio.CancelledError:
        await asyncio.shield(call.finish(grpc.StatusCode.CANCELLED.name, "cancelled"))
        raise
    except Exception as exc:
        await call.finish(grpc.StatusCode.INTERNAL.name, type(exc).__name__)
        raise
    if not await call.finish(OK):
        await context.abort(grpc.StatusCode.INTERNAL, AUDIT_UNAVAILABLE)
