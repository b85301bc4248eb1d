"""``flask --app app crm …``: happy paths, and bad arguments exit non-zero with a one-line reason."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crm import create_app
from crm.auth.services import sha256
from crm.extensions import db
from crm.models import ApiToken, Customer, FollowUp, Pool, PoolEvent, User


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args):
        result = runner.invoke(args=["crm", *args])
        db.session.expire_all()
        return result

    return invoke


def _one_line_reason(result, text: str) -> None:
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert text in error_lines[0]


def test_init_db_on_an_empty_database_twice_is_idempotent(app_config, fresh_db_url):
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": fresh_db_url})
    runner = app.test_cli_runner()
    with app.app_context():
        for _ in range(2):
            result = runner.invoke(args=["crm", "init-db"])
            assert result.exit_code == 0, result.output
            assert "database ready" in result.output
        from crm.models import Level, Stage

        assert db.session.scalar(select(func.count()).select_from(Level)) == 3
        assert db.session.scalar(select(func.count()).select_from(Stage)) == 7
        db.session.remove()
        db.engine.dispose()


def test_create_user_with_level_and_team(cli, make):
    make.team("华东一组")
    result = cli("create-user", "New@Test.cn", "--name", "新同事", "--password", "long-enough-1",
                 "--role", "manager", "--level", "初级销售", "--team", "华东一组")  # fmt: skip
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User).where(User.email == "new@test.cn"))
    assert (user.name, user.role, user.level.name, user.team.name) == (
        "新同事",
        "manager",
        "初级销售",
        "华东一组",
    )
    assert user.password_hash != "long-enough-1"


@pytest.mark.parametrize(
    "args,reason",
    [
        (["x@test.cn", "--name", "X", "--password", "short"], "8"),
        (["x@test.cn", "--name", "X", "--password", "long-enough-1", "--level", "不存在"], "no level named"),
        (["x@test.cn", "--name", "X", "--password", "long-enough-1", "--team", "不存在"], "no team named"),
        (
            ["x@test.cn", "--name", "X", "--password", "long-enough-1", "--role", "boss"],
            "'boss' is not one of",
        ),
        (["x@test.cn", "--password", "long-enough-1"], "Missing option '--name'"),
    ],
)
def test_create_user_bad_arguments_exit_non_zero_and_write_nothing(cli, args, reason):
    before = db.session.scalar(select(func.count()).select_from(User))
    _one_line_reason(cli("create-user", *args), reason)
    assert db.session.scalar(select(func.count()).select_from(User)) == before


def test_create_user_refuses_a_taken_email(cli, rep):
    _one_line_reason(cli("create-user", rep.email, "--name", "X", "--password", "long-enough-1"), "已被使用")


def test_create_token_prints_a_token_that_is_stored_hashed_and_works(cli, rep, api):
    result = cli("create-token", rep.email, "--name", "website", "--scopes", "read leads")
    assert result.exit_code == 0, result.output
    plain = result.output.strip()
    assert plain.startswith("ghcrm_")
    token = db.session.scalar(select(ApiToken).where(ApiToken.user_id == rep.id))
    assert token.token_hash == sha256(plain) and plain not in (token.token_hash, token.prefix)
    assert (token.name, token.scopes) == ("website", "read leads")
    assert api(plain).get("/api/v1/me").get_json()["email"] == rep.email


@pytest.mark.parametrize(
    "args,reason",
    [
        (["nobody@test.cn"], "no user with email"),
        (["{rep}", "--scopes", "read fly"], "fly"),
        (["{rep}", "--scopes", "admin"], "admin"),
    ],
)
def test_create_token_bad_arguments_exit_non_zero(cli, rep, args, reason):
    args = [a.replace("{rep}", rep.email) for a in args]
    _one_line_reason(cli("create-token", *args), reason)
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


def test_create_token_refuses_a_deactivated_user(cli, rep):
    rep.active = False
    db.session.commit()
    _one_line_reason(cli("create-token", rep.email), "deactivated")


def test_seed_demo_fills_an_empty_database_and_prints_the_logins(cli):
    result = cli("seed-demo", "--customers", "40")
    assert result.exit_code == 0, result.output
    assert "admin@demo.cn" in result.output and "demo1234" in result.output
    # 40 customers, plus the few duplicate leads the intake seeder files to show the conflict queue
    assert 40 <= db.session.scalar(select(func.count()).select_from(Customer)) <= 45
    assert db.session.scalar(select(func.count()).select_from(User)) >= 8
    assert {p.name for p in db.session.scalars(select(Pool))} >= {"新线索池", "华东区域池", "沉默客户池"}
    assert db.session.scalar(select(func.count()).select_from(FollowUp)) > 0
    assert db.session.scalar(select(func.count()).select_from(PoolEvent)) >= 40


def test_seed_demo_refuses_a_database_with_customers(cli, make):
    make.customer(make.pool())
    _one_line_reason(cli("seed-demo", "--customers", "10"), "already has customers")
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


def test_seed_demo_if_empty_skips_quietly_when_there_is_data(cli, make):
    make.customer(make.pool())
    result = cli("seed-demo", "--if-empty")
    assert result.exit_code == 0
    assert "not loaded" in result.output
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


@pytest.mark.parametrize(
    "args,reason", [(["--customers", "-1"], "-1"), (["--password", "short"], "8 characters")]
)
def test_seed_demo_bad_arguments_exit_non_zero(cli, args, reason):
    _one_line_reason(cli("seed-demo", *args), reason)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_seed_demo_keeps_every_rep_under_their_holding_cap(cli):
    assert cli("seed-demo").exit_code == 0  # the default size, as ./dev run loads it
    rows = db.session.execute(
        select(User.email, func.count(Customer.id), User.level_id)
        .join(Customer, Customer.owner_id == User.id)
        .group_by(User.id, User.email, User.level_id)
    ).all()
    assert rows
    from crm.models import Level

    for email, held, level_id in rows:
        cap = db.session.get(Level, level_id).holding_cap
        assert held < cap, f"{email} holds {held} of {cap}"
