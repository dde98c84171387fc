"""Certificate rotation through cert-manager: pure functions over the objects read, no I/O.

A workload's certificates are the cert-manager ``Certificate`` objects whose ``secretName`` a
Deployment mounts as a secret volume. Rotating one is what ``cmctl renew`` does: it adds the
``Issuing`` condition (reason ``ManuallyTriggered``) to the Certificate's status, and
cert-manager issues a new certificate into the Secret, raising ``status.revision``. It is
verified when every certificate's revision moved past the one read before and it is
``Ready`` again. A re-issued certificate cannot be withdrawn, so there is no rollback.

:class:`Rotation` makes the requests, through calls the Kubernetes executor lends it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyagent.errors import ActionRefused, ExecutorError
from pyagent.executors import Change, Deadline, ProposedAction, StepResult, poll
from pyagent.executors.kube_changes import DECISION_ANNOTATION, MERGE, Conflict, stamped

GROUP, VERSION, PLURAL = "cert-manager.io", "v1", "certificates"
FIELD_MANAGER = "pyagent"
CONFLICT_ATTEMPTS = 3
ISSUING = "Issuing"
TRIGGER_REASON = "ManuallyTriggered"

Json = dict[str, Any]


def mounted_secrets(deployment: Json) -> set[str]:
    volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
    return {v["secret"]["secretName"] for v in volumes if (v.get("secret") or {}).get("secretName")}


def workload_certificates(deployment: Json, certificates: list[Json]) -> list[Json]:
    """The Certificates issuing a Secret the Deployment mounts; refused when there is none."""
    secrets = mounted_secrets(deployment)
    found = [c for c in certificates if c.get("spec", {}).get("secretName") in secrets]
    if not found:
        meta = deployment["metadata"]
        raise ActionRefused(
            f"no cert-manager Certificate issues a Secret that Deployment {meta['namespace']}/{meta['name']}"
            " mounts"
        )
    return sorted(found, key=lambda c: str(c["metadata"]["name"]))


def _conditions(certificate: Json) -> list[Json]:
    found: list[Json] = (certificate.get("status") or {}).get("conditions") or []
    return found


def issuing(certificate: Json) -> bool:
    return any(c.get("type") == ISSUING and c.get("status") == "True" for c in _conditions(certificate))


def renewal(certificate: Json, now: datetime) -> Json:
    """The status patch ``cmctl renew`` makes, on the read ``resourceVersion`` only."""
    kept = [c for c in _conditions(certificate) if c.get("type") != ISSUING]
    condition = {
        "type": ISSUING,
        "status": "True",
        "reason": TRIGGER_REASON,
        "message": "Certificate re-issuance manually triggered",
        "lastTransitionTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {
        "metadata": {"resourceVersion": certificate["metadata"]["resourceVersion"]},
        "status": {"conditions": [*kept, condition]},
    }


def revision(certificate: Json) -> int:
    return int((certificate.get("status") or {}).get("revision") or 0)


def renewed(certificate: Json, before: int) -> StepResult | str:
    """Done when re-issued (revision past ``before``) and Ready; a failed issuance fails."""
    name = certificate["metadata"]["name"]
    for condition in _conditions(certificate):
        if condition.get("type") == ISSUING and condition.get("reason") == "Failed":
            return StepResult(False, f"Certificate {name}: issuance failed: {condition.get('message', '')}")
    if revision(certificate) <= before:
        return f"Certificate {name} still at revision {revision(certificate)}"
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in _conditions(certificate))
    if issuing(certificate) or not ready:
        return f"Certificate {name} at revision {revision(certificate)} is not Ready yet"
    return StepResult(True, f"Certificate {name} re-issued (revision {revision(certificate)})")


class Rotation:
    """``certificate_rotation`` for the Kubernetes executor, which lends its calls: ``call``
    (one API request as JSON, raising its errors and :class:`Conflict`) and ``deployment``."""

    def __init__(
        self,
        custom: Any,
        call: Callable[..., Json],
        deployment: Callable[[ProposedAction], Json],
        clock: Callable[[], datetime],
    ) -> None:
        self.custom, self._call, self._deployment, self.clock = custom, call, deployment, clock

    def _certificates(self, action: ProposedAction) -> list[Json]:
        listed = self._call(
            f"list Certificates in {action.namespace}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            action.namespace,
            PLURAL,
        )
        return workload_certificates(self._deployment(action), listed.get("items", []))

    def _patch_certificate(
        self, certificate: Json, body: Json, *, status: bool, dry_run: bool = False
    ) -> Json:
        meta = certificate["metadata"]
        method = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        extra = {"dry_run": "All"} if dry_run else {}
        return self._call(
            f"PATCH {_certificate_path(meta)}{'/status' if status else ''}",
            method,
            GROUP,
            VERSION,
            meta["namespace"],
            PLURAL,
            meta["name"],
            body,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE,
            **extra,
        )

    def plan(self, action: ProposedAction) -> str:
        certificates = self._certificates(action)
        for certificate in certificates:
            self._patch_certificate(
                certificate, renewal(certificate, self.clock()), status=True, dry_run=True
            )
        paths = ", ".join(f"{_certificate_path(c['metadata'])}/status" for c in certificates)
        return (
            f"server-side dry run accepted: PATCH {paths} ({MERGE}) "
            f"condition {ISSUING}=True reason {TRIGGER_REASON}, as cmctl renew"
        )

    def execute(self, action: ProposedAction, decision_id: str) -> Change:
        for _attempt in range(CONFLICT_ATTEMPTS):
            certificates = self._certificates(action)
            pending = [c for c in certificates if not stamped(c, decision_id)]
            if not pending:
                already = {"kind": "certificate", "revisions": {}}
                return Change(
                    f"already renewed for decision {decision_id}; nothing sent", already, sent=False
                )
            try:
                for certificate in pending:
                    if not issuing(certificate):
                        body = renewal(certificate, self.clock())
                        self._patch_certificate(certificate, body, status=True)
                    stamp = {"metadata": {"annotations": {DECISION_ANNOTATION: decision_id}}}
                    self._patch_certificate(certificate, stamp, status=False)
            except Conflict:
                continue
            names = ", ".join(c["metadata"]["name"] for c in pending)
            revisions = {c["metadata"]["name"]: revision(c) for c in pending}
            return Change(
                f"renewal of Certificates {names} triggered", {"kind": "certificate", "revisions": revisions}
            )
        raise ExecutorError(
            f"certificate_rotation on {action.target}: changed under us {CONFLICT_ATTEMPTS} times"
        )

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
        revisions: dict[str, int] = dict(change.undo.get("revisions", {}))

        def check() -> StepResult | str:
            waiting = []
            for name, before in sorted(revisions.items()):
                try:
                    certificate = self._call(
                        f"read Certificate {action.namespace}/{name}",
                        self.custom.get_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        action.namespace,
                        PLURAL,
                        name,
                    )
                except ExecutorError as exc:
                    return f"cannot read Certificate {name}: {exc}"
                answer = renewed(certificate, before)
                if isinstance(answer, StepResult) and not answer.ok:
                    return answer
                if isinstance(answer, str):
                    waiting.append(answer)
            return (
                "; ".join(waiting)
                if waiting
                else StepResult(True, f"{len(revisions)} certificates re-issued")
            )

        return poll(deadline, check, f"certificate_rotation on {action.target}")


def _certificate_path(meta: Json) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}"
