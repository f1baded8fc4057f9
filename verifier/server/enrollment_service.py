"""Enrollment servicer: converts messages, delegates to verifier.enrollment."""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from verifier.authz import ENROLLMENT, Authorizer, method_name
from verifier.enrollment import Enroller, EnrollmentRejectedError
from verifier.server.convert import IDENTIFIER
from verifier.server.host_watch import HostWatchHub
from weightgate.v1 import enrollment_pb2, enrollment_pb2_grpc

log = logging.getLogger(__name__)

# A TPM2B_PUBLIC is a few hundred bytes and an EK certificate a few KiB; refuse
# anything far beyond so a client cannot make us parse megabytes.
MAX_PUBLIC_BYTES = 4096
MAX_CERTIFICATE_BYTES = 16384

STATUS_FOR_KIND = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "denied": grpc.StatusCode.PERMISSION_DENIED,
}
BEGIN = method_name(ENROLLMENT, "BeginEnrollment")
COMPLETE = method_name(ENROLLMENT, "CompleteEnrollment")


class EnrollmentService(enrollment_pb2_grpc.EnrollmentServicer):
    def __init__(self, enroller: Enroller, *, authz: Authorizer, host_watch: HostWatchHub) -> None:
        self._enroller = enroller
        self._authz = authz
        self._host_watch = host_watch

    async def BeginEnrollment(
        self,
        request: enrollment_pb2.BeginEnrollmentRequest,
        context: grpc.aio.ServicerContext[
            enrollment_pb2.BeginEnrollmentRequest, enrollment_pb2.BeginEnrollmentResponse
        ],
    ) -> enrollment_pb2.BeginEnrollmentResponse:
        identity = await self._authz.require(context, BEGIN)
        await self._authz.require_host(context, identity, BEGIN, request.host_id)
        if not IDENTIFIER.fullmatch(request.host_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "host_id: not a valid host id")
        if not request.ak_public or not request.ek_public:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "ek_public and ak_public are required"
            )
        if (
            len(request.ak_public) > MAX_PUBLIC_BYTES
            or len(request.ek_public) > MAX_PUBLIC_BYTES
            or len(request.ek_certificate) > MAX_CERTIFICATE_BYTES
        ):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key or certificate too large")
        try:
            challenge = await asyncio.to_thread(
                self._enroller.begin,
                host_id=request.host_id,
                ek_public=request.ek_public,
                ek_certificate=request.ek_certificate,
                ak_public=request.ak_public,
            )
        except EnrollmentRejectedError as exc:
            log.warning("enrollment refused host=%s reason=%s", request.host_id, exc.reason.code)
            await context.abort(STATUS_FOR_KIND[exc.kind], str(exc.reason))
        log.info("enrollment begun host=%s id=%s", request.host_id, challenge.enrollment_id)
        return enrollment_pb2.BeginEnrollmentResponse(
            enrollment_id=challenge.enrollment_id,
            credential_blob=challenge.credential_blob,
            encrypted_secret=challenge.encrypted_secret,
        )

    async def CompleteEnrollment(
        self,
        request: enrollment_pb2.CompleteEnrollmentRequest,
        context: grpc.aio.ServicerContext[
            enrollment_pb2.CompleteEnrollmentRequest, enrollment_pb2.CompleteEnrollmentResponse
        ],
    ) -> enrollment_pb2.CompleteEnrollmentResponse:
        identity = await self._authz.require(context, COMPLETE)
        if not request.enrollment_id or len(request.activated_secret) > 64:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "enrollment_id and activated_secret are required"
            )
        # A wrong secret fails an enrollment for good: only its own host's agent may try.
        host_id = await asyncio.to_thread(self._enroller.host_of, request.enrollment_id)
        if host_id is not None:
            await self._authz.require_host(context, identity, COMPLETE, host_id)
        complete = functools.partial(
            self._enroller.complete,
            enrollment_id=request.enrollment_id,
            activated_secret=request.activated_secret,
        )
        try:
            # Ordered with the host's other writes; an unknown enrollment (no host)
            # is refused by complete(), so its key "" orders nothing.
            enrolled = await self._host_watch.apply(host_id or "", complete, cause="enrolled")
        except EnrollmentRejectedError as exc:
            log.warning("enrollment failed id=%s reason=%s", request.enrollment_id, exc.reason.code)
            await context.abort(STATUS_FOR_KIND[exc.kind], str(exc.reason))
        host = enrolled.host
        log.info("host enrolled host=%s", host.host_id)
        return enrollment_pb2.CompleteEnrollmentResponse(
            host_id=host.host_id, ak_name=host.ak_name or b""
        )
