"""Admin screens: users (create, edit, away, deactivate, reset password), teams and levels."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from crm import clock
from crm.extensions import db
from crm.models import Level, Role, Team, User
from tests.conftest import login


def _user_form(**overrides) -> dict:
    data = {"email": "new.rep@test.cn", "name": "新销售", "role": "rep", "level_id": "", "team_id": "",
            "manager_id": "", "phone": "", "regions": "", "skills": "", "away_until": ""}  # fmt: skip
    data.update(overrides)
    return data


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_admin_creates_a_user_who_can_then_sign_in(admin_client, client, make):
    team = make.team("华南一组")
    db.session.commit()
    level = db.session.scalar(select(Level).where(Level.name == "高级销售"))
    resp = admin_client.post("/admin/users/new", data=_user_form(
        password="first-pass-1", level_id=level.id, team_id=team.id, regions="华南, 华东,西南"))  # fmt: skip
    assert resp.status_code == 302, resp.get_data(as_text=True)[-3000:]
    user = db.session.scalar(select(User).where(User.email == "new.rep@test.cn"))
    assert (user.role, user.level_id, user.team_id) == (Role.REP, level.id, team.id)
    assert user.regions == ["华南", "华东", "西南"]
    assert check_password_hash(user.password_hash, "first-pass-1")
    assert "新销售" in admin_client.get("/admin/users").get_data(as_text=True)
    assert (
        client.post("/login", data={"email": "new.rep@test.cn", "password": "first-pass-1"}).status_code
        == 303
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"email": "not-an-email"}, "邮箱格式不正确"),
        ({"name": ""}, "请填写姓名"),
        ({"name": "长" * 61}, "60"),
        ({"password": "short"}, "密码需 8–200 位"),
        ({"role": "boss"}, "不是有效的选择"),
        ({"level_id": "99999"}, "不是有效的选择"),
    ],
)
def test_bad_new_user_input_gets_422_with_the_message_and_writes_nothing(admin_client, overrides, message):
    before = _count(User)
    data = _user_form(**{"password": "first-pass-1", **overrides})
    resp = admin_client.post("/admin/users/new", data=data, headers={"HX-Request": "true"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert body.lstrip().startswith('<section class="card" id="user_form">')  # the fragment, swapped in place
    assert message in body or message in body.replace("Not a valid choice.", "不是有效的选择")
    assert _count(User) == before


def test_taken_email_is_refused_under_the_email_field(admin_client, rep):
    resp = admin_client.post(
        "/admin/users/new", data=_user_form(email=rep.email.upper(), password="first-pass-1")
    )
    assert resp.status_code == 422
    assert "已被使用" in resp.get_data(as_text=True)


def test_admin_edits_role_level_team_manager_and_away_until(admin_client, rep, manager, make):
    team = make.team("二组")
    level = make.level("资深销售", cap=50, senior=True)
    db.session.commit()
    resp = admin_client.post(f"/admin/users/{rep.id}", data=_user_form(
        email=rep.email, name="小王", role="manager", level_id=level.id, team_id=team.id,
        manager_id=manager.id, away_until="2030-05-01T18:00"))  # fmt: skip
    assert resp.status_code == 302
    db.session.refresh(rep)
    assert (rep.role, rep.level_id, rep.team_id, rep.manager_id) == (
        Role.MANAGER,
        level.id,
        team.id,
        manager.id,
    )
    # away-until is typed in the team's zone (Asia/Shanghai) and stored in UTC
    assert clock.as_utc(rep.away_until) == datetime(2030, 5, 1, 10, 0, tzinfo=clock.UTC)
    page = admin_client.get(f"/admin/users/{rep.id}").get_data(as_text=True)
    assert 'value="2030-05-01T18:00"' in page


def test_user_cannot_be_their_own_manager(admin_client, manager):
    resp = admin_client.post(f"/admin/users/{manager.id}",
                             data=_user_form(email=manager.email, name="王主管", role="manager",
                                             manager_id=manager.id))  # fmt: skip
    assert resp.status_code == 422
    assert "不能把用户设为自己的主管" in resp.get_data(as_text=True)
    db.session.refresh(manager)
    assert manager.manager_id is None


def test_admin_cannot_demote_themself(admin_client, admin):
    resp = admin_client.post(f"/admin/users/{admin.id}",
                             data=_user_form(email=admin.email, name=admin.name, role="rep"))  # fmt: skip
    assert resp.status_code == 422
    assert "不能取消自己的管理员角色" in resp.get_data(as_text=True)
    db.session.refresh(admin)
    assert admin.role == Role.ADMIN


def test_admin_cannot_deactivate_themself(admin_client, admin):
    resp = admin_client.post(f"/admin/users/{admin.id}/active", data={"active": "0"})
    assert resp.status_code == 422
    assert "不能停用自己的账号" in resp.get_data(as_text=True)
    db.session.refresh(admin)
    assert admin.active


def test_deactivated_user_is_signed_out_and_can_be_reactivated(app, admin_client, rep):
    rep_client = app.test_client()
    login(rep_client, rep)
    assert rep_client.get("/").status_code == 200
    resp = admin_client.post(f"/admin/users/{rep.id}/active", data={"active": "0"})
    assert resp.status_code in (302, 303)
    db.session.refresh(rep)
    assert not rep.active and rep.deactivated_at is not None
    assert rep_client.get("/").status_code == 302  # signed out on the next request
    admin_client.post(f"/admin/users/{rep.id}/active", data={"active": "1"})
    db.session.refresh(rep)
    assert rep.active and rep.deactivated_at is None


def test_reset_password_ends_the_users_other_sessions(app, admin_client, rep):
    rep_client = app.test_client()
    login(rep_client, rep)
    resp = admin_client.post(f"/admin/users/{rep.id}/password", data={"reset-password": "brand-new-pass"})
    assert resp.status_code == 302
    db.session.refresh(rep)
    assert check_password_hash(rep.password_hash, "brand-new-pass")
    assert rep_client.get("/").status_code == 302


def test_too_short_reset_password_is_refused(admin_client, rep):
    old_hash = rep.password_hash
    resp = admin_client.post(f"/admin/users/{rep.id}/password", data={"reset-password": "short"})
    assert resp.status_code == 422
    assert "密码需 8–200 位" in resp.get_data(as_text=True)
    db.session.refresh(rep)
    assert rep.password_hash == old_hash


def test_admin_creates_and_edits_a_team(admin_client, manager):
    resp = admin_client.post("/admin/teams", data={"name": "华北组", "manager_id": manager.id,
                                                   "timezone": "Asia/Tokyo"})  # fmt: skip
    assert resp.status_code == 302
    team = db.session.scalar(select(Team).where(Team.name == "华北组"))
    assert (team.manager_id, team.timezone) == (manager.id, "Asia/Tokyo")
    resp = admin_client.post(
        f"/admin/teams/{team.id}", data={"name": "华北一组", "manager_id": "", "timezone": ""}
    )
    assert resp.status_code == 302
    db.session.refresh(team)
    assert (team.name, team.manager_id, team.timezone) == ("华北一组", None, None)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"name": "", "timezone": ""}, "请填写团队名称"),
        ({"name": "一组", "timezone": ""}, "已存在"),
        ({"name": "新组", "timezone": "Mars/Olympus"}, "不是有效的选择"),
    ],
)
def test_bad_team_input_is_refused_with_422(admin_client, manager, data, message):
    before = _count(Team)
    resp = admin_client.post("/admin/teams", data={"manager_id": "", **data})
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert _count(Team) == before


def test_admin_creates_and_edits_a_level(admin_client):
    resp = admin_client.post("/admin/levels", data={"name": "销售总监", "holding_cap": "80", "rank": "5",
                                                    "is_senior": "y"})  # fmt: skip
    assert resp.status_code == 302
    level = db.session.scalar(select(Level).where(Level.name == "销售总监"))
    assert (level.holding_cap, level.rank, level.is_senior) == (80, 5, True)
    resp = admin_client.post(
        f"/admin/levels/{level.id}", data={"name": "销售总监", "holding_cap": "60", "rank": "5"}
    )
    assert resp.status_code == 302
    db.session.refresh(level)
    assert (level.holding_cap, level.is_senior) == (60, False)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"name": "X", "holding_cap": "0"}, "保有量需在 1–10000 之间"),
        ({"name": "X", "holding_cap": "abc"}, "保有量"),
        ({"name": "", "holding_cap": "10"}, "请填写职级名称"),
        ({"name": "初级销售", "holding_cap": "10"}, "已存在"),
    ],
)
def test_bad_level_input_is_refused_with_422(admin_client, data, message):
    before = _count(Level)
    resp = admin_client.post("/admin/levels", data=data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert _count(Level) == before


def test_users_list_shows_away_and_deactivated_states(admin_client, make):
    away = make.user(name="休假中的人")
    away.away_until = clock.now() + timedelta(days=3)
    gone = make.user(name="已离职的人")
    gone.active = False
    db.session.commit()
    body = admin_client.get("/admin/users").get_data(as_text=True)
    assert "休假中的人" in body and "已离职的人" in body
    assert "已停用" in body
