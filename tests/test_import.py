"""Excel/CSV import: mapping guesses, per-row errors, idempotency, error files, hostile files."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from crm.extensions import db
from crm.intake import importer
from crm.intake.services import LeadData, intake
from crm.models import Activity, Customer, ImportBatch, PoolEvent, Reminder

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
HEADERS = ["公司名称", "联系人", "手机号码", "邮箱", "行业", "员工人数", "来源渠道", "备注"]
GOOD = [
    ["上海晨光信息技术有限公司", "王磊", "13800138001", "wl@cg.cn", "互联网", "120", "展会", "要演示"],
    ["杭州卓越软件有限公司", "李娜", "0571-88888888", "", "教育", "50-99人", "公众号", ""],
    ["苏州新源电子有限公司", "张伟", "139 0013 9002", "zw@xy.cn", "制造业", 800, "", '=HYPERLINK("x")'],
]
BAD = [
    ["", "", "13800138009", "", "", "", "", ""],  # no name
    ["南京汇通物流有限公司", "刘洋", "12345", "", "", "", "", ""],  # not a phone
    ["宁波锦程贸易有限公司", "陈静", "", "chen@", "", "", "", ""],  # bad email
    ["=cmd|' /C calc'!A0", "黑客", "", "", "", "", "", ""],  # formula, no contact
    ["重复公司", "赵磊", "13800138001", "", "", "", "", ""],  # repeats row 2's phone
]


def _xlsx(rows, headers=HEADERS) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(headers)
    for row in rows:
        ws.append(row)
    for row in ws.iter_rows():
        for cell in row:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # text that looks like a formula, as users paste it
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _csv(rows, headers=HEADERS, encoding="utf-8-sig") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *rows])
    return buffer.getvalue().encode(encoding)


@pytest.fixture
def pool(make, manager, rep):
    return make.pool("新线索池", kind="lead", admins=[manager], members=[rep])


def _upload(client, data: bytes, pool, name="线索.xlsx", **extra):
    return client.post(
        "/intake/imports",
        data={"file": (io.BytesIO(data), name), "pool_id": str(pool.id), **extra},
        content_type="multipart/form-data",
    )


def _batch() -> ImportBatch:
    return db.session.scalar(select(ImportBatch).order_by(ImportBatch.id.desc()))


def _preview(client, batch):
    columns = {f"col-{i}": name for i, name in batch.mapping["columns"].items()}
    return client.post(f"/intake/imports/{batch.id}", data=columns)


def test_headers_in_chinese_or_english_are_mapped_automatically():
    assert importer.guess_mapping(HEADERS) == {
        "0": "name", "1": "contact_name", "2": "phone", "3": "email", "4": "industry", "5": "company_size",
        "6": "channel", "7": "notes",
    }  # fmt: skip
    english = [
        "Company Name",
        "Contact",
        "Mobile",
        "E-mail",
        "WeChat ID",
        "Job Title",
        "utm_source",
        "Remarks",
    ]
    assert importer.guess_mapping(english) == {
        "0": "name", "1": "contact_name", "2": "phone", "3": "email", "4": "wechat", "5": "job_title",
        "6": "utm_source", "7": "notes",
    }  # fmt: skip
    assert importer.guess_mapping(["客户公司全称*", "联系人姓名", "联系电话(手机)", "杂项"]) == {
        "0": "name", "1": "contact_name", "2": "phone",
    }  # fmt: skip


def test_preview_lists_each_bad_row_with_its_column_and_reason(manager_client, pool):
    resp = _upload(manager_client, _xlsx(GOOD + BAD), pool)
    assert resp.status_code == 303
    batch = _batch()
    page = _preview(manager_client, batch)
    assert page.status_code == 200
    db.session.refresh(batch)
    errors = {(e["row"], e["column"]): e["reason"] for e in batch.errors}
    assert errors[(5, "公司名称")] == "请填写公司名称或联系人姓名。"
    assert "不是有效的电话号码" in errors[(6, "手机号码")]
    assert errors[(7, "邮箱")] == "不是有效的邮箱地址。"
    assert errors[(8, "手机号码")] == "请至少填写电话、邮箱或微信中的一项。"
    assert errors[(9, "手机号码")] == "与第 2 行重复 (电话相同)。"
    assert batch.rows_error == 5 and batch.rows_total == 8
    assert "将新建" in page.text and "与第 2 行重复" in page.text
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0  # a preview writes no leads


def test_import_creates_the_good_rows_in_the_pool_with_a_batch_record(manager_client, pool, manager):
    _upload(manager_client, _xlsx(GOOD + BAD), pool, channel="地推")
    batch = _batch()
    _preview(manager_client, batch)
    done = manager_client.post(f"/intake/imports/{batch.id}/run")
    assert done.status_code == 303
    db.session.refresh(batch)
    assert (batch.status, batch.rows_created, batch.rows_duplicate, batch.rows_error) == ("imported", 3, 0, 5)
    customers = {c.name: c for c in db.session.scalars(select(Customer))}
    assert set(customers) == {row[0] for row in GOOD}
    first = customers["上海晨光信息技术有限公司"]
    assert first.source == "import" and first.pool_id == pool.id and first.owner_id is None
    assert (
        first.channel == "展会" and customers["苏州新源电子有限公司"].channel == "地推"
    )  # default for blanks
    assert customers["杭州卓越软件有限公司"].phone_key == "+8657188888888"
    assert customers["杭州卓越软件有限公司"].company_size == 50
    kinds = db.session.scalars(select(PoolEvent.kind).where(PoolEvent.customer_id == first.id))
    assert list(kinds) == ["created"]
    page = manager_client.get(f"/intake/imports/{batch.id}")
    assert "导入完成" in page.text


def test_importing_the_same_file_twice_creates_nothing_new(manager_client, pool):
    data = _xlsx(GOOD)
    _upload(manager_client, data, pool)
    batch = _batch()
    _preview(manager_client, batch)
    manager_client.post(f"/intake/imports/{batch.id}/run")
    again = _upload(manager_client, data, pool)
    assert again.status_code == 422 and "不会重复导入" in again.text
    rerun = manager_client.post(f"/intake/imports/{batch.id}/run")
    assert rerun.status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 3
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 1


def test_the_same_rows_in_another_file_are_attached_not_created(manager_client, pool, rep, session):
    _upload(manager_client, _xlsx(GOOD), pool)
    first = _batch()
    _preview(manager_client, first)
    manager_client.post(f"/intake/imports/{first.id}/run")
    owned = db.session.scalar(select(Customer).where(Customer.name == "上海晨光信息技术有限公司"))
    owned.owner_id = rep.id
    session.commit()
    _upload(manager_client, _csv(GOOD), pool, name="again.csv")
    second = _batch()
    page = _preview(manager_client, second)
    assert "与已有客户重复" in page.text
    manager_client.post(f"/intake/imports/{second.id}/run")
    db.session.refresh(second)
    assert (second.rows_created, second.rows_duplicate) == (0, 3)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 3
    assert (
        db.session.scalar(select(func.count()).select_from(Activity).where(Activity.kind == "duplicate")) == 3
    )
    # The owner hears once for the batch, not once per row.
    notes = list(db.session.scalars(select(Reminder).where(Reminder.user_id == rep.id)))
    assert len(notes) == 1 and f"#{second.id}" in notes[0].title


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_the_error_file_lists_bad_rows_with_formulas_escaped(manager_client, pool, fmt):
    _upload(manager_client, _xlsx(GOOD + BAD), pool)
    batch = _batch()
    _preview(manager_client, batch)
    resp = manager_client.get(f"/intake/imports/{batch.id}/errors.{fmt}")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(resp.data.decode("utf-8-sig"))))
    else:
        wb = load_workbook(io.BytesIO(resp.data))
        rows = [[c.value for c in row] for row in wb.active.iter_rows()]
        assert not any(c.data_type == "f" for row in wb.active.iter_rows() for c in row)
    assert rows[0][0] == "行号" and rows[0][-1] == "错误原因"
    assert [int(r[0]) for r in rows[1:]] == [5, 6, 7, 8, 9]
    formula_row = next(r for r in rows if str(r[0]) == "8")
    assert formula_row[1] == "'=cmd|' /C calc'!A0"
    assert not any(str(v).startswith(("=", "@")) for row in rows for v in row if v is not None)


def test_a_failed_import_imports_nothing_and_marks_the_batch(manager_client, pool, monkeypatch):
    _upload(manager_client, _xlsx(GOOD), pool)
    batch = _batch()
    _preview(manager_client, batch)
    import crm.intake.services as services

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services.scoring, "recompute", explode)  # fails after the rows were written
    resp = manager_client.post(f"/intake/imports/{batch.id}/run")
    assert resp.status_code == 303
    db.session.refresh(batch)
    assert batch.status == "failed"
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    assert db.session.scalar(select(func.count()).select_from(PoolEvent)) == 0


def test_a_gbk_csv_from_chinese_excel_is_read(manager_client, pool):
    _upload(manager_client, _csv(GOOD[:2], encoding="gb18030"), pool, name="导出.csv")
    batch = _batch()
    page = _preview(manager_client, batch)
    assert "上海晨光信息技术有限公司" in page.text or batch.rows_total == 2
    db.session.refresh(batch)
    assert batch.rows_error == 0 and batch.rows_total == 2


def test_a_phone_turned_into_scientific_notation_is_explained(manager_client, pool):
    _upload(manager_client, _csv([["某公司", "甲", "1.38001E+10", "", "", "", "", ""]]), pool, name="x.csv")
    batch = _batch()
    _preview(manager_client, batch)
    db.session.refresh(batch)
    assert "科学计数法" in batch.errors[0]["reason"]


def test_a_file_over_the_size_limit_gets_a_clear_413(manager_client, pool):
    big = b"0" * (50 * 1024 * 1024)
    resp = _upload(manager_client, big, pool, name="big.xlsx")
    assert resp.status_code == 413
    assert "20 MB" in resp.text
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0


def test_a_zip_bomb_is_refused_before_openpyxl_opens_it(manager_client, pool, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr(
            "xl/worksheets/sheet1.xml", b"\0" * (300 * 1024 * 1024)
        )  # 300 MB of zeros, ~300 KB zipped
    import openpyxl

    def never(*args, **kwargs):
        raise AssertionError("openpyxl must not open a zip bomb")

    monkeypatch.setattr(openpyxl, "load_workbook", never)
    resp = _upload(manager_client, buffer.getvalue(), pool, name="bomb.xlsx")
    assert resp.status_code == 422 and "压缩炸弹" in resp.text
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"%PDF-1.7 not a sheet", "report.pdf", "只支持 .xlsx 和 .csv 文件"),
        (b"PK\x03\x04 broken zip", "broken.xlsx", "不是有效的 Excel"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 old", "old.xls", "旧版 .xls"),
        (b"", "empty.csv", "文件是空的"),
    ],
)
def test_files_that_are_not_spreadsheets_are_refused(manager_client, pool, data, name, message):
    resp = _upload(manager_client, data, pool, name=name)
    assert resp.status_code == 422 and message in resp.text
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0


def test_a_zip_that_is_not_a_workbook_is_refused(manager_client, pool):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "hello")
    resp = _upload(manager_client, buffer.getvalue(), pool, name="fake.xlsx")
    assert resp.status_code == 422 and "不是有效的 Excel" in resp.text


def test_only_pool_admins_import_and_reps_cannot_open_import(rep_client, manager_client, make, pool):
    other = make.pool("别人的池")
    resp = _upload(manager_client, _xlsx(GOOD), other)
    assert resp.status_code == 422 and db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0
    assert rep_client.get("/intake/imports").status_code == 403


def test_cli_import_reports_and_imports(app, pool, admin, tmp_path):
    path = tmp_path / "leads.xlsx"
    path.write_bytes(_xlsx(GOOD + BAD))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crm", "import", str(path), "--pool", pool.name])
    assert result.exit_code == 0, result.output
    assert "errors in 5 rows" in result.output and "created 3" in result.output
    again = runner.invoke(args=["crm", "import", str(path), "--pool", pool.name])
    assert again.exit_code != 0 and "不会重复导入" in again.output
    missing = runner.invoke(args=["crm", "import", str(path), "--pool", "没有这个池"])
    assert missing.exit_code != 0 and "no pool named" in missing.output


def test_a_batch_already_imported_through_intake_counts_its_rows(session, pool, manager):
    """The batch's status and counts change in the same transaction as its leads."""
    batch = ImportBatch(user_id=manager.id, pool_id=pool.id, filename="x", file_hash="0" * 64, mapping={},
                        status="importing", created_at=NOW)  # fmt: skip
    session.add(batch)
    session.commit()
    intake(session, [LeadData(name="甲公司", phone="13800000001")], source="import", now=NOW, pool=pool,
           actor=manager, batch=batch)  # fmt: skip
    db.session.refresh(batch)
    assert (batch.status, batch.rows_created, batch.finished_at) == ("imported", 1, NOW)
