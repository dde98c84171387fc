"""The humans' HTTP surface: ``/console`` pages, the ``/api/`` JSON API, ``/slack/interactions``.

Routes are one table of (method, path pattern, handler, who may call it). Pages and the
API need a signed-in person; a POST from a browser needs the session's CSRF token;
Slack's endpoint is authenticated by its request signature alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2

from pyagent.access import Identity
from pyagent.console import api, queries
from pyagent.console.auth import Session, Visitor
from pyagent.console.desk import Desk
from pyagent.console.web import Request, Response, StartResponse, json_response, redirect
from pyagent.notifiers import outbox

Handler = Callable[[Desk, Request, Visitor, Mapping[str, str]], Response]
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
ABORT_LEVEL = 3  # conditional autonomy: executed, with an abort window
ID = r"(?P<id>[A-Za-z0-9-]{1,64})"
_NO_SESSION = Session("", "", (), "", 0.0)


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch or 0, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pyagent.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    return env


TEMPLATES = _environment()


def flash(desk: Desk, message: str, error: bool) -> str:
    """Query parameters carrying a message to the next page, signed so that nobody can make
    the console show words of their own through a link."""
    text = message[:300]
    kind = "error" if error else "ok"
    return urlencode({"msg": text, "kind": kind, "sig": desk.gate.sign(f"flash:{kind}:{text}")})


def render(desk: Desk, visitor: Visitor, name: str, request: Request, **values: Any) -> Response:
    message, kind = request.query.get("msg", ""), request.query.get("kind", "")
    if not desk.gate.signed(f"flash:{kind}:{message}", request.query.get("sig", "")):
        message = ""
    page = TEMPLATES.get_template(name).render(
        identity=visitor.identity,
        csrf=desk.gate.csrf_token(visitor.session),
        message=message,
        message_kind="error" if kind == "error" else "",
        **values,
    )
    return Response(200, page.encode())


def login_page(desk: Desk, request: Request, visitor: Visitor, _: Mapping[str, str]) -> Response:
    return render(desk, visitor, "login.html", request)


def login(desk: Desk, request: Request, visitor: Visitor, _: Mapping[str, str]) -> Response:
    form = request.form()
    signed_in = desk.gate.login(form.get("username", ""), form.get("password", ""))
    if signed_in is None:
        return redirect("/console/login?" + flash(desk, "Wrong user or password", error=True))
    return redirect("/console", [signed_in[1]])


def logout(desk: Desk, request: Request, visitor: Visitor, _: Mapping[str, str]) -> Response:
    return redirect("/console/login", [desk.gate.logout()])


def index(desk: Desk, request: Request, visitor: Visitor, _: Mapping[str, str]) -> Response:
    book = desk.supervisor.approvals
    pending = [a.to_json() for a in book.listed("pending")]
    changes = {}
    for approval in pending:
        record = desk.supervisor.changes.for_decision(approval["decision_id"])
        if record is not None:
            changes[approval["decision_id"]] = record.to_json()
    recent = [a.to_json() for a in book.listed(limit=30) if a.state != "pending"][:15]
    policy = queries.policy_state(desk.policy_dir, datetime.now(UTC))
    return render(
        desk, visitor, "index.html", request, pending=pending, recent=recent, policy=policy, changes=changes
    )


def approval_page(desk: Desk, request: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
    found = desk.supervisor.approvals.get(match["id"])
    if found is None:
        return Response(404, b"no such approval")
    change = desk.supervisor.changes.for_decision(found.decision_id)
    return render(
        desk,
        visitor,
        "approval.html",
        request,
        approval=found.to_json(),
        change=change.to_json() if change else None,
        notices=outbox.history(desk.store, found.id),
    )


def decide_form(desk: Desk, request: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
    identity = _person(visitor)
    status, message, _ = desk.decide(
        match["id"], api.VERDICTS[match["verb"]], request.form().get("plan_hash", ""), identity
    )
    return redirect(f"/console/approvals/{match['id']}?" + flash(desk, message, error=status != 200))


def decisions_page(desk: Desk, request: Request, visitor: Visitor, _: Mapping[str, str]) -> Response:
    level = request.query.get("level", "")
    service, trigger = request.query.get("service", ""), request.query.get("trigger", "")
    rows = queries.decisions(desk.store, int(level) if level.isdigit() else None, service, trigger)
    return render(
        desk,
        visitor,
        "decisions.html",
        request,
        rows=rows,
        level=int(level) if level.isdigit() else None,
        service=service,
        trigger=trigger,
    )


def decision_page(desk: Desk, request: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
    decision_id = match["id"]
    approval = desk.supervisor.approvals.for_decision(decision_id)
    ids = frozenset({approval.id}) if approval else frozenset()
    trail = queries.audit_trail(desk.audit_path, decision_id, ids)
    level_3 = any(r.get("kind") == "decision" and r.get("level") == ABORT_LEVEL for r in trail)
    executed = any(r.get("kind") == "action_step" and r.get("step") == "executed" for r in trail)
    abortable = desk.abort is not None and level_3 and executed
    return render(
        desk,
        visitor,
        "decision.html",
        request,
        decision_id=decision_id,
        trail=trail,
        approval=approval.to_json() if approval else None,
        abortable=abortable,
    )


def abort_form(desk: Desk, request: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
    status, message = desk.abort_action(match["id"], _person(visitor))
    return redirect(f"/console/decisions/{match['id']}?" + flash(desk, message, error=status != 200))


def static(desk: Desk, request: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
    name = match["name"]
    data = resources.files("pyagent.console").joinpath("static", name).read_bytes()
    return Response(200, data, STATIC_TYPES[name[name.rindex(".") :]])


def _person(visitor: Visitor) -> Identity:
    assert visitor.identity is not None  # noqa: S101 - the router admits only signed-in visitors here
    return visitor.identity


def _api(
    handler: Callable[..., Response], *keys: str, person: bool = False, request: bool = False
) -> Handler:
    """Adapt an ``api`` function to the route table's handler shape."""

    def handle(desk: Desk, req: Request, visitor: Visitor, match: Mapping[str, str]) -> Response:
        args: list[Any] = [desk]
        if request:
            args.append(req)
        if person:
            args.append(_person(visitor))
        args.extend(match[key] for key in keys)
        return handler(*args)

    return handle


# (method, pattern, handler, access): access is "public", "person" (signed in) or "slack"
ROUTES: tuple[tuple[str, re.Pattern[str], Handler, str], ...] = tuple(
    (method, re.compile(f"^{pattern}$"), handler, access)
    for method, pattern, handler, access in (
        ("GET", "/console/static/(?P<name>console\\.(?:css|js))", static, "public"),
        ("GET", "/console/login", login_page, "public"),
        ("POST", "/console/login", login, "public"),
        ("POST", "/console/logout", logout, "person"),
        ("GET", "/console/?", index, "person"),
        ("GET", f"/console/approvals/{ID}", approval_page, "person"),
        ("POST", f"/console/approvals/{ID}/(?P<verb>approve|reject)", decide_form, "person"),
        ("GET", "/console/decisions", decisions_page, "person"),
        ("GET", f"/console/decisions/{ID}", decision_page, "person"),
        ("POST", f"/console/actions/{ID}/abort", abort_form, "person"),
        ("GET", "/api/approvals", _api(api.approvals, request=True), "person"),
        ("GET", f"/api/approvals/{ID}", _api(api.approval, "id"), "person"),
        (
            "POST",
            f"/api/approvals/{ID}/(?P<verb>approve|reject)",
            _api(api.decide, "id", "verb", person=True, request=True),
            "person",
        ),
        ("GET", "/api/decisions", _api(api.decisions, request=True), "person"),
        ("POST", f"/api/actions/{ID}/abort", _api(api.abort, "id", person=True), "person"),
        ("POST", "/slack/interactions", lambda desk, req, _v, _m: api.slack_interactions(desk, req), "slack"),
    )
)


class HumansApp:
    """WSGI application for the humans' routes (the webhook server hands them over)."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        return self.handle(Request.from_environ(environ))(start)

    def handle(self, request: Request) -> Response:
        allowed = [r for r in ROUTES if r[1].match(request.path)]
        route = next((r for r in allowed if r[0] == request.method), None)
        if route is None:
            return json_response(
                405 if allowed else 404, {"error": f"no such endpoint: {request.method} {request.path}"}
            )
        _, pattern, handler, access = route
        match = pattern.match(request.path)
        assert match is not None  # noqa: S101 - selected by this pattern
        if access == "slack":
            return handler(self.desk, request, Visitor(None, _NO_SESSION, None), {})
        visitor = self.desk.gate.visitor(request)
        response = self._guarded(request, visitor, access, handler, match.groupdict())
        if visitor.set_cookie is not None and not any(h[0] == "Set-Cookie" for h in response.headers):
            response.headers.append(visitor.set_cookie)
        return response

    def _guarded(
        self, request: Request, visitor: Visitor, access: str, handler: Handler, match: Mapping[str, str]
    ) -> Response:
        api_call = request.path.startswith("/api/")
        if access == "person" and visitor.identity is None:
            if api_call:
                return json_response(
                    401, {"error": "sign in"}, [("WWW-Authenticate", 'Basic realm="pyagent"')]
                )
            return redirect("/console/login")
        if request.method == "POST" and not self.desk.gate.csrf_ok(request, visitor):
            return json_response(403, {"error": "missing or wrong CSRF token"})
        return handler(self.desk, request, visitor, match)
