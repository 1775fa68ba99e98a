"""Admin security: the authorization hook and its default, CSRF, Sec-Fetch-Site, escaping."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from admin_helpers import csrf_token
from admin_helpers import hx_post
from flask import request
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import perform_next_step

db = SQLAlchemy()
geneva = Geneva(db)

HOSTILE = "<script>alert('x')</script>"


def _authorize(action: str) -> bool:
    # "op" may do anything; "viewer" may only look.
    user = request.headers.get("X-User")
    return user == "op" or (user == "viewer" and action == "view")


APP_CONFIG = {
    "GENEVA_ADMIN_AUTHORIZE": _authorize,
    "GENEVA_ADMIN_LOGS_URL": "https://logs.example.com/?q={hero_id}",
}
OP = {"X-User": "op"}


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "admins_accounts"
    id = sa.Column(sa.String(80), primary_key=True)

    def __str__(self) -> str:
        return f"<img src=x onerror=alert(1)> account {self.id}"


class Hostile(Exception):
    pass


class SignupWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def verify(self) -> None:
        raise Hostile(HOSTILE)


def _workflow() -> SignupWorkflow:
    account = Account(id=f'"><script>alert({HOSTILE!r})</script>')
    db.session.add(account)
    db.session.commit()
    return SignupWorkflow.create(hero=account)


def test_without_a_hook_the_admin_is_closed_unless_debug_or_testing(admin, app):
    app.config["GENEVA_ADMIN_AUTHORIZE"] = None
    assert admin.get(f"{PREFIX}/").status_code == 200  # TESTING is on
    app.testing = False
    closed = admin.get(f"{PREFIX}/")
    assert closed.status_code == 403
    assert "GENEVA_ADMIN_AUTHORIZE" in closed.text


def test_the_hook_decides_who_may_view_and_who_may_act(admin):
    workflow = _workflow()
    assert admin.get(f"{PREFIX}/").status_code == 403
    assert admin.get(f"{PREFIX}/workflows/{workflow.id}").status_code == 403
    assert admin.get(f"{PREFIX}/", headers={"X-User": "viewer"}).status_code == 200
    token = csrf_token_as(admin, "op")
    refused = admin.post(
        f"{PREFIX}/workflows/{workflow.id}/cancel",
        headers={"X-User": "viewer", "X-CSRFToken": token, "HX-Request": "true"},
    )
    assert refused.status_code == 403
    assert workflow_state(workflow.id) == "ready"
    allowed = hx_post(admin, f"/workflows/{workflow.id}/cancel", headers=OP)
    assert allowed.status_code == 200
    assert workflow_state(workflow.id) == "canceled"


def csrf_token_as(client, user: str) -> str:
    return csrf_token(client, {"X-User": user})


workflow_state = Committed(geneva).state


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no token
        {"X-CSRFToken": "forged"},
        {"Sec-Fetch-Site": "cross-site", "X-CSRFToken": None},  # right token, other site
    ],
    ids=["missing-token", "wrong-token", "cross-site"],
)
def test_state_changes_without_a_valid_token_from_this_site_are_rejected(admin, headers):
    workflow = _workflow()
    token = csrf_token_as(admin, "op")
    sent = {k: (token if v is None else v) for k, v in headers.items()}
    response = admin.post(
        f"{PREFIX}/workflows/{workflow.id}/pause", headers={**OP, "HX-Request": "true", **sent}
    )
    assert response.status_code == 403
    assert workflow_state(workflow.id) == "ready"
    bulk = admin.post(
        f"{PREFIX}/workflows/bulk",
        headers={**OP, **sent},
        data={"op": "pause", "scope": "filter", "confirm": "1"},
    )
    assert bulk.status_code == 403
    assert workflow_state(workflow.id) == "ready"


def test_get_never_changes_state(admin):
    workflow = _workflow()
    assert admin.get(f"{PREFIX}/workflows/{workflow.id}/pause", headers=OP).status_code == 405
    assert admin.get(f"{PREFIX}/workflows/bulk?op=pause&confirm=1", headers=OP).status_code in (
        404,
        405,
    )
    assert workflow_state(workflow.id) == "ready"


def test_hostile_messages_hero_ids_and_hero_strings_render_as_text(admin):
    workflow = _workflow()
    with pytest.raises(Hostile):
        perform_next_step(workflow)
    pages = [
        admin.get(f"{PREFIX}/workflows/{workflow.id}", headers=OP).text,
        admin.get(f"{PREFIX}/", headers=OP).text,
        admin.get(f"{PREFIX}/workflows", headers=OP).text,
    ]
    for text in pages:
        assert "<script>alert" not in text
        assert "<img src=x" not in text
    detail = pages[0]
    assert "&lt;script&gt;alert(" in detail  # the message, shown as text
    assert "&lt;img src=x onerror=alert(1)&gt; account" in detail  # str(hero)
    assert "https://logs.example.com/?q=%22%3E%3Cscript%3E" in detail  # quoted in the link


def test_unknown_ids_and_operations_are_404_for_actions_too(admin):
    workflow = _workflow()
    assert hx_post(admin, "/workflows/424242/pause", headers=OP).status_code == 404
    assert hx_post(admin, f"/workflows/{workflow.id}/explode", headers=OP).status_code == 404
    bad_bulk = hx_post(admin, "/workflows/bulk", headers=OP, data={"op": "drop"})
    assert bad_bulk.status_code == 400


def _assert_security_headers(response, *, cached: bool = False) -> None:
    headers = response.headers
    assert headers["X-Frame-Options"] == "DENY", response.request.path
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = {
        part.split()[0]: part.split()[1:] for part in headers["Content-Security-Policy"].split(";")
    }
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    if not cached:
        assert headers["Cache-Control"] == "no-store", response.request.path
    else:
        assert "no-store" not in headers.get("Cache-Control", "")


def test_every_admin_answer_forbids_framing_sniffing_caching_and_foreign_scripts(admin):
    workflow = _workflow()
    with pytest.raises(Hostile):
        perform_next_step(workflow)
    htmx = {"HX-Request": "true", **OP}
    answers = [
        admin.get(f"{PREFIX}/", headers=OP),
        admin.get(f"{PREFIX}/", headers=htmx),
        admin.get(f"{PREFIX}/workflows", headers=OP),
        admin.get(f"{PREFIX}/workflows?state=paused", headers=htmx),
        admin.get(f"{PREFIX}/classes/SignupWorkflow", headers=OP),
        admin.get(f"{PREFIX}/workflows/poll?h_row_{workflow.id}=x", headers=htmx),
        admin.get(f"{PREFIX}/workflows/{workflow.id}", headers=OP),
        admin.get(f"{PREFIX}/workflows/{workflow.id}", headers=htmx),
        hx_post(admin, f"/workflows/{workflow.id}/cancel", headers=OP),
        hx_post(admin, "/workflows/bulk", headers=OP, data={"op": "pause", "scope": "filter"}),
        # and the refusals: 400, 403, 404, 405
        admin.get(f"{PREFIX}/workflows?before=x", headers=OP),
        admin.get(f"{PREFIX}/workflows/{10**30}", headers=OP),
        admin.get(f"{PREFIX}/"),
        admin.post(f"{PREFIX}/workflows/{workflow.id}/pause", headers=OP),
        admin.get(f"{PREFIX}/workflows/bulk", headers=OP),
    ]
    assert [a.status_code for a in answers] == [200] * 10 + [400, 404, 403, 403, 404]
    for answer in answers:
        _assert_security_headers(answer)
    # Files shipped with the package hold no data: they keep their caching.
    for path in ("/static/geneva/geneva.css", "/static/geneva/geneva.js", "/source.css"):
        with admin.get(f"{PREFIX}{path}", headers=OP) as asset:
            assert asset.status_code == 200
            _assert_security_headers(asset, cached=True)


def test_the_templates_hold_no_inline_script_style_or_handler(admin):
    workflow = _workflow()
    with pytest.raises(Hostile):
        perform_next_step(workflow)
    pages = [
        admin.get(f"{PREFIX}/", headers=OP).text,
        admin.get(f"{PREFIX}/workflows", headers=OP).text,
        admin.get(f"{PREFIX}/workflows/{workflow.id}", headers=OP).text,
        hx_post(
            admin,
            "/workflows/bulk",
            headers=OP,
            data={"op": "cancel", "scope": "selected", "ids": [str(workflow.id)]},
        ).text,
    ]
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)|<style|<[^>]*\sstyle=|<[^>]*\son[a-z]+=|hx-on|javascript:", re.I
    )
    for page in pages:
        assert not inline.findall(page), inline.findall(page)
