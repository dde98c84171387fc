"""Change records for regulated assets: ServiceNow's fields, filed before anything executes."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import FakeServiceNow
from tests.humans import api, audit_records, humans_settings, pending_approval, saas, served, wait_until
from tests.serving import example, post

FIELDS = {
    "short_description", "description", "justification", "implementation_plan", "backout_plan", "test_plan",
    "risk_impact_analysis", "risk", "impact", "cmdb_ci", "assignment_group", "start_date", "end_date", "type",
}  # fmt: skip


def _servicenow(fakes_url: str) -> dict[str, str]:
    return {
        "servicenow_url": fakes_url,
        "servicenow_user": FakeServiceNow.USER,
        "servicenow_password": FakeServiceNow.PASSWORD,
    }


def test_regulated_change_is_filed_in_servicenow_before_approval_and_executes_after(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        settings = humans_settings(state, fakes, **_servicenow(fakes.servicenow.url))
        with served(settings) as (url, _):
            post(url, example("regulated-pci"))
            approval = pending_approval(url)
            [filed] = [r.json() for r in fakes.servicenow.wait_for(1)]
            shown = api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()
            message = fakes.slack.wait_for(1, "/api/chat.postMessage")[0].json()
            seen = {"plan_hash": approval["plan_hash"]}
            api(url, "alice").post(f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10)
            assert wait_until(
                lambda: [r for r in audit_records(state, "action_step") if r["step"] == "executed"]
            )
    assert FIELDS == set(filed)
    assert "rolling_restart of Deployment payments/payments-api" == filed["short_description"]
    assert "regulated_asset" in filed["justification"]
    assert "kubectl rollout restart" in filed["implementation_plan"]
    assert "rollout undo" in filed["backout_plan"]
    assert "payments" == filed["cmdb_ci"]
    assert "normal" == filed["type"]
    assert ("filed", "CHG0030001") == (
        shown["change_record"]["state"],
        shown["change_record"]["external_number"],
    )
    assert "CHG0030001" in str(message["blocks"])
    [record] = audit_records(state, "change_record")
    assert filed == record["fields"]
    assert 1 == len(audit_records(state, "change_record_filed"))


def test_unreachable_change_system_means_nothing_executes_on_the_regulated_asset(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        closed = fakes.servicenow.url
        fakes.servicenow.close()  # the change system is down
        with served(humans_settings(state, fakes, **_servicenow(closed))) as (url, _):
            post(url, example("regulated-pci"))
            approval = pending_approval(url)
            seen = {"plan_hash": approval["plan_hash"]}
            answer = api(url, "alice").post(
                f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10
            )
            assert 200 == answer.status_code
            assert wait_until(lambda: audit_records(state, "approval_not_executed"))
    [blocked] = audit_records(state, "approval_not_executed")
    assert "change_system_unavailable" == blocked["reason"]
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "executed"]
    assert audit_records(state, "change_record_unfiled")


def test_without_a_change_system_the_record_is_kept_locally_with_every_field(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("regulated-pci"))
        approval = pending_approval(url)
        shown = api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()
    assert "recorded" == shown["change_record"]["state"]
    assert FIELDS == set(shown["change_record"]["fields"])
    assert [] == fakes.servicenow.received()
