"""`weightgate models|sites|reviews|releases …` and `hosts assign|quarantine`.

Sites, reviews and host assignments are proposed (verifier.proposal_cli) and
take effect once approved.

`models add` runs on the verifier host: it encrypts the checkpoint into the
verifier's blob directory with the verifier's key store (both from the verifier
config), then registers it through the Operator API. Everything else only talks
to the API.
"""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from verifier.config import ConfigError, load_config
from verifier.keystore import FileKeyStore, KeyStoreError
from verifier.models.encrypt import CheckpointSourceError, encrypt_checkpoint
from verifier.models.progress import ProgressReporter
from verifier.operator_cli import (
    RPC_TIMEOUT_SECONDS,
    CliError,
    add_connection_arguments,
    field_time,
    format_table,
)
from verifier.proposal_cli import add_justification_argument, propose
from weightgate.checkpoint.format import CheckpointFormatError
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RELEASE_STATES = {
    operator_pb2.RELEASE_STATE_RELEASED: "released",
    operator_pb2.RELEASE_STATE_REVOKED: "revoked",
    operator_pb2.RELEASE_STATE_ERASED: "erased",
    operator_pb2.RELEASE_STATE_EXPIRED: "expired",
}


def add_gate_commands(commands: Any, hosts_commands: Any) -> None:
    """Register the gate's subcommands on the top-level and `hosts` parsers."""
    models = commands.add_parser("models", help="encrypted model checkpoints")
    models_commands = models.add_subparsers(dest="subcommand", required=True)
    add = models_commands.add_parser(
        "add", help="encrypt a checkpoint directory and register it (run on the verifier host)"
    )
    add.add_argument("name")
    add.add_argument("--version", required=True)
    add.add_argument("--path", type=Path, required=True, help="checkpoint directory")
    add.add_argument("--risk-tier", required=True)
    add.add_argument("--config", type=Path, required=True, help="the verifier's config file")
    add_connection_arguments(add)
    for name, text in (("list", "registered model versions"), ("show", "one model version")):
        sub = models_commands.add_parser(name, help=text)
        if name == "show":
            sub.add_argument("digest", help="manifest digest (hex)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        add_connection_arguments(sub)

    _add_site_and_review_commands(commands)

    releases = commands.add_parser("releases", help="key releases and their leases")
    releases_commands = releases.add_subparsers(dest="subcommand", required=True)
    rel_list = releases_commands.add_parser("list", help="released/renewed/revoked/erased")
    rel_list.add_argument("--host", default="")
    rel_list.add_argument("--model", default="", help="manifest digest (hex)")
    rel_list.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(rel_list)

    assign = hosts_commands.add_parser(
        "assign", help="propose assigning a host to a site (needs approval)"
    )
    assign.add_argument("host")
    assign.add_argument("--site", required=True)
    add_justification_argument(assign)
    add_connection_arguments(assign)
    quarantine = hosts_commands.add_parser(
        "quarantine", help="withdraw trust now: revokes every release, forces erasure"
    )
    quarantine.add_argument("host")
    quarantine.add_argument("--reason", required=True)
    add_connection_arguments(quarantine)


def _add_site_and_review_commands(commands: Any) -> None:
    sites = commands.add_parser("sites", help="sites and their risk-tier clearances")
    sites_commands = sites.add_subparsers(dest="subcommand", required=True)
    site_set = sites_commands.add_parser(
        "set", help="propose creating or changing a site and its clearances (needs approval)"
    )
    site_set.add_argument("site")
    site_set.add_argument("--cleared", default="", help="comma-separated risk tiers")
    site_set.add_argument(
        "--description", default="", help="datacenter, country, operating organisation"
    )
    add_justification_argument(site_set)
    add_connection_arguments(site_set)
    site_list = sites_commands.add_parser("list", help="sites and what they are cleared for")
    site_list.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(site_list)

    reviews = commands.add_parser("reviews", help="pre-deployment reviews")
    reviews_commands = reviews.add_subparsers(dest="subcommand", required=True)
    review = reviews_commands.add_parser(
        "propose",
        help="propose a pre-deployment review of a model version for a site (needs approval)",
        description="The review takes effect when approvers other than you approve it; the "
        "release gate then requires its controls of every host in the site.",
    )
    review.add_argument("digest", help="manifest digest (hex) of the model version")
    review.add_argument("--site", required=True)
    review.add_argument(
        "--categories", required=True, help="comma-separated risk categories assessed"
    )
    review.add_argument(
        "--controls",
        default="",
        help="comma-separated controls the release gate must enforce (see `reviews list`)",
    )
    review.add_argument("--risk-tier", default="", help="assessed tier (default: the model's)")
    review.add_argument("--findings", default="", help="the review's findings")
    review.add_argument("--summary", default="")
    review.add_argument("--valid-days", type=int, default=0, help="default: the verifier's")
    add_justification_argument(review)
    add_connection_arguments(review)
    review_list = reviews_commands.add_parser("list", help="reviews, newest first")
    review_list.add_argument("--model", default="", help="manifest digest (hex)")
    review_list.add_argument("--site", default="")
    review_list.add_argument("--effective", action="store_true", help="only those in force now")
    review_list.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_arguments(review_list)


def _digest(text: str) -> bytes:
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise CliError(f"{text!r} is not a 64-hex-digit manifest digest")
    return digest


def _model(model: operator_pb2.ModelVersion) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "risk_tier": model.risk_tier,
        "digest": model.manifest_digest.hex(),
        "files": model.file_count,
        "bytes": model.plaintext_bytes,
        "added_at": field_time(model, "added_at"),
    }


def release_document(release: operator_pb2.Release) -> dict[str, Any]:
    return {
        "release": release.release_id,
        "host": release.host_id,
        "model": release.model,
        "digest": release.manifest_digest.hex(),
        "state": RELEASE_STATES.get(release.state, "unknown"),
        "released_at": field_time(release, "released_at"),
        "lease_expires_at": field_time(release, "lease_expires_at"),
        "renewed_at": field_time(release, "renewed_at"),
        "revoked_at": field_time(release, "revoked_at"),
        "erased_at": field_time(release, "erased_at"),
        "revocation_reason": release.revocation_reason,
    }


def models_add(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str:
    try:
        config = load_config(args.config)
        keystore = FileKeyStore.open(config.keystore)
    except (ConfigError, KeyStoreError) as exc:
        raise CliError(str(exc)) from None
    incoming = config.blob_dir / f".incoming-{uuid.uuid4().hex}"
    progress = ProgressReporter(f"encrypting {args.name}:{args.version}")
    try:
        encrypted = encrypt_checkpoint(
            args.path,
            incoming,
            name=args.name,
            version=args.version,
            risk_tier=args.risk_tier,
            keystore=keystore,
            progress=progress,
        )
        progress.finish()
        final = config.blob_dir / encrypted.manifest_digest.hex()
        if final.exists():
            raise CliError(f"model version {encrypted.manifest_digest.hex()} already stored")
        incoming.rename(final)
    except (CheckpointSourceError, CheckpointFormatError, OSError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        raise CliError(f"cannot encrypt {args.path}: {exc}") from None
    except CliError:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    model = stub.AddModelVersion(
        operator_pb2.AddModelVersionRequest(
            manifest=encrypted.manifest_bytes,
            manifest_signature=encrypted.signature,
            wrapped_data_keys=encrypted.wrapped_keys,
        ),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    digest = model.manifest_digest.hex()
    return f"added {model.name}:{model.version} ({model.risk_tier}) digest {digest}"


def run_gate_command(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str | None:
    """Dispatch a gate command; None when `args` is not one of ours."""
    command = (args.command, args.subcommand)
    timeout = RPC_TIMEOUT_SECONDS
    if command == ("models", "add"):
        return models_add(stub, args)
    if command == ("models", "list"):
        models = [_model(m) for m in stub.ListModelVersions(
            operator_pb2.ListModelVersionsRequest(), timeout=timeout).models]  # fmt: skip
        if args.json:
            return json.dumps({"models": models}, indent=2)
        rows = [["MODEL", "VERSION", "TIER", "FILES", "BYTES", "DIGEST"]]
        rows += [[m["name"], m["version"], m["risk_tier"], str(m["files"]), str(m["bytes"]),
                  m["digest"]] for m in models]  # fmt: skip
        return format_table(rows) if models else "no model versions registered"
    if command == ("models", "show"):
        model = stub.GetModelVersion(
            operator_pb2.GetModelVersionRequest(manifest_digest=_digest(args.digest)),
            timeout=timeout,
        )
        return json.dumps(_model(model), indent=2)
    if command == ("sites", "set"):
        tiers = [t.strip() for t in args.cleared.split(",") if t.strip()]
        site = operator_pb2.Site(
            site_id=args.site, cleared_risk_tiers=tiers, description=args.description
        )
        change = operator_pb2.ProposedChange(site=operator_pb2.SetSiteRequest(site=site))
        return propose(stub, change, args.justification)
    if command == ("sites", "list"):
        sites = stub.ListSites(operator_pb2.ListSitesRequest(), timeout=timeout).sites
        documents: list[dict[str, Any]] = [
            {"site": s.site_id, "cleared": list(s.cleared_risk_tiers), "description": s.description}
            for s in sites
        ]
        if args.json:
            return json.dumps({"sites": documents}, indent=2)
        rows = [["SITE", "CLEARED TIERS", "DESCRIPTION"]]
        rows += [[d["site"], ", ".join(d["cleared"]) or "-", d["description"] or "-"]
                 for d in documents]  # fmt: skip
        return format_table(rows) if documents else "no sites"
    if command == ("reviews", "propose"):
        review = operator_pb2.RecordReviewRequest(
            manifest_digest=_digest(args.digest),
            site_id=args.site,
            summary=args.summary,
            valid_days=args.valid_days,
            risk_tier=args.risk_tier,
            categories_assessed=_names(args.categories),
            required_controls=_names(args.controls),
            findings=args.findings,
        )
        return propose(stub, operator_pb2.ProposedChange(review=review), args.justification)
    if command == ("reviews", "list"):
        return reviews_list(stub, args)
    if command == ("releases", "list"):
        request = operator_pb2.ListReleasesRequest(
            host_id=args.host, manifest_digest=_digest(args.model) if args.model else b""
        )
        releases = [
            release_document(r) for r in stub.ListReleases(request, timeout=timeout).releases
        ]
        if args.json:
            return json.dumps({"releases": releases}, indent=2)
        rows = [["HOST", "MODEL", "STATE", "RELEASED", "LEASE UNTIL", "ERASED", "REASON"]]
        rows += [[r["host"], r["model"], r["state"], r["released_at"] or "-",
                  r["lease_expires_at"] or "-", r["erased_at"] or "-",
                  r["revocation_reason"] or "-"] for r in releases]  # fmt: skip
        return format_table(rows) if releases else "no releases"
    if command == ("hosts", "assign"):
        assign = operator_pb2.AssignHostToSiteRequest(host_id=args.host, site_id=args.site)
        change = operator_pb2.ProposedChange(host_site=assign)
        return propose(stub, change, args.justification)
    if command == ("hosts", "quarantine"):
        summary = stub.QuarantineHost(
            operator_pb2.QuarantineHostRequest(host_id=args.host, reason=args.reason),
            timeout=timeout,
        )
        return f"{summary.host_id} quarantined; its releases are being revoked"
    return None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def reviews_list(stub: operator_pb2_grpc.OperatorStub, args: argparse.Namespace) -> str:
    response = stub.ListReviews(
        operator_pb2.ListReviewsRequest(
            manifest_digest=_digest(args.model) if args.model else b"",
            site_id=args.site,
            effective_only=args.effective,
        ),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    documents: list[dict[str, Any]] = [
        {
            "review_id": r.review_id,
            "model": r.manifest_digest.hex(),
            "site": r.site_id,
            "risk_tier": r.risk_tier,
            "categories_assessed": list(r.categories_assessed),
            "required_controls": list(r.required_controls),
            "findings": r.findings,
            "summary": r.summary,
            "proposer": r.reviewer,
            "approvers": list(r.approvers),
            "recorded_at": field_time(r, "recorded_at"),
            "expires_at": field_time(r, "expires_at"),
            "proposal_id": r.proposal_id,
        }
        for r in response.reviews
    ]
    if args.json:
        return json.dumps(
            {"reviews": documents, "known_controls": list(response.known_controls)}, indent=2
        )
    rows = [["MODEL", "SITE", "TIER", "CONTROLS", "APPROVED BY", "IN FORCE FROM", "EXPIRES"]]
    rows += [[d["model"][:16], d["site"], d["risk_tier"], ", ".join(d["required_controls"]) or "-",
              ", ".join(d["approvers"]) or "-", d["recorded_at"] or "-", d["expires_at"] or "-"]
             for d in documents]  # fmt: skip
    known = "known controls: " + ", ".join(response.known_controls)
    return (format_table(rows) if documents else "no reviews") + "\n" + known
