"""Background tasks (crm/tasks) through the import: queued as rq jobs, progress at most once a second,
cancel, a killed worker found and retried without importing a row twice, Redis down, stuck batches."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select, update

from crm import clock, queues
from crm.extensions import db
from crm.models import Customer, ImportBatch, Reminder, Task
from crm.tasks import services as tasks
from workers import jobs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config(app_config):
    # Everything goes through the queue; small chunks so a few hundred rows make several.
    return app_config | {"CRM_TASK_INLINE_MAX": 0, "CRM_IMPORT_CHUNK_ROWS": 50, "CRM_TASK_STUCK_SECONDS": 2}


@pytest.fixture
def pool(make, manager, rep):
    return make.pool("新线索池", kind="lead", admins=[manager], members=[rep])


@pytest.fixture
def redis_conn(app):
    conn = queues.get_redis()
    for name in queues.QUEUES:
        queues.get_queue(name).empty()
    yield conn
    for name in queues.QUEUES:
        queues.get_queue(name).empty()


def _xlsx(n: int, bad_every: int = 10) -> bytes:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet()
    ws.append(["公司名称", "联系人", "手机号码"])
    for i in range(n):
        phone = "12345" if bad_every and i % bad_every == 0 else f"139{i:08d}"
        ws.append([f"测试导入公司{i:05d}有限公司", f"联系人{i}", phone])
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _upload(client, data: bytes, pool, name="线索.xlsx"):
    resp = client.post(
        "/intake/imports",
        data={"file": (io.BytesIO(data), name), "pool_id": str(pool.id)},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303, resp.text
    return db.session.scalar(select(ImportBatch).order_by(ImportBatch.id.desc()))


def _task(kind: str) -> Task:
    return db.session.scalar(select(Task).where(Task.kind == kind).order_by(Task.id.desc()))


def _preview_and_run(client, batch) -> Task:
    columns = {f"col-{i}": name for i, name in batch.mapping["columns"].items()}
    client.post(f"/intake/imports/{batch.id}", data=columns)
    jobs.run_task(_task("import_preview").id)
    client.post(f"/intake/imports/{batch.id}/run")
    return _task("import_run")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _customers() -> int:
    return db.session.scalar(select(func.count()).select_from(Customer))


def test_a_big_import_is_queued_answers_at_once_and_the_job_imports_it(
    manager_client, pool, manager, redis_conn
):
    batch = _upload(manager_client, _xlsx(300), pool)
    assert batch.rows_total == 300  # from the sheet's stated size: the upload reads no rows
    columns = {f"col-{i}": name for i, name in batch.mapping["columns"].items()}
    page = manager_client.post(f"/intake/imports/{batch.id}", data=columns)
    preview = _task("import_preview")
    assert preview.status == "queued" and preview.job_id and 'hx-trigger="every 1s"' in page.text
    assert queues.get_queue().job_ids == [preview.job_id]
    jobs.run_task(preview.id)
    db.session.refresh(preview)
    assert preview.status == "done" and preview.result["valid"] == 270 and preview.errors == 30
    page = manager_client.get(f"/intake/imports/{batch.id}")
    assert "导入 270 条有效数据" in page.text and 'hx-disabled-elt="find button"' in page.text
    manager_client.post(f"/intake/imports/{batch.id}/run")
    run = _task("import_run")
    assert run.status == "queued" and _customers() == 0
    jobs.run_task(run.id)
    db.session.refresh(run)
    db.session.refresh(batch)
    assert (run.status, run.done, run.total, run.errors) == ("done", 270, 270, 30)
    assert (batch.status, batch.rows_created, batch.rows_error, batch.rows_done) == ("imported", 270, 30, 270)
    assert _customers() == 270
    note = db.session.scalar(
        select(Reminder)
        .where(Reminder.user_id == manager.id, Reminder.kind == "system")
        .order_by(Reminder.id.desc())
    )
    assert "已完成" in note.title and "新建 270 条" in note.body
    fragment = manager_client.get(f"/tasks/{run.id}", headers={"HX-Request": "true"})
    assert "every 1s" not in fragment.text and "已处理 270 / 270" in fragment.text
    errors = manager_client.get(f"/intake/imports/{batch.id}/errors.csv")
    assert errors.status_code == 200 and errors.data.decode("utf-8-sig").count("\n") == 31


def test_progress_is_written_at_most_once_a_second_and_a_cancel_stops_the_task(app, manager):
    task = Task(kind="import_run", owner_id=manager.id, params={}, created_at=clock.now(), total=1000)
    db.session.add(task)
    db.session.commit()
    progress = tasks.Progress(task)
    for done in range(1000):
        progress(done)
    assert progress.writes == 1
    db.session.refresh(task)
    assert task.done == 0 and task.heartbeat_at is not None
    db.session.execute(update(Task).where(Task.id == task.id).values(cancel_requested=True))
    db.session.commit()
    with pytest.raises(tasks.TaskCancelled):
        progress(999, force=True)


def test_a_cancelled_import_keeps_its_chunks_and_the_retry_finishes_without_duplicates(
    manager_client, pool, redis_conn, monkeypatch
):
    batch = _upload(manager_client, _xlsx(200, bad_every=0), pool)
    run = _preview_and_run(manager_client, batch)
    real = tasks.Progress.__call__

    def cancel_after_first_chunk(self, done=None, **kwargs):
        if kwargs.get("stage") is None and done == 50:
            with db.engine.begin() as conn:
                conn.execute(update(Task).where(Task.id == self.task_id).values(cancel_requested=True))
            kwargs["force"] = True
        return real(self, done, **kwargs)

    monkeypatch.setattr(tasks.Progress, "__call__", cancel_after_first_chunk)
    jobs.run_task(run.id)
    db.session.refresh(run)
    db.session.refresh(batch)
    assert (run.status, batch.status, batch.rows_done) == ("cancelled", "cancelled", 50)
    assert _customers() == 50
    monkeypatch.setattr(tasks.Progress, "__call__", real)
    retry = manager_client.post(f"/tasks/{run.id}/retry", headers={"HX-Request": "true"})
    assert retry.status_code == 200 and 'hx-trigger="every 1s"' in retry.text
    jobs.run_task(run.id)
    db.session.refresh(batch)
    assert (batch.status, batch.rows_created, batch.rows_done) == ("imported", 200, 200)
    assert _customers() == 200


def test_a_worker_killed_mid_import_is_found_and_the_retry_imports_each_row_once(
    app, manager_client, pool, redis_conn
):
    batch = _upload(manager_client, _xlsx(1000, bad_every=0), pool)
    columns = {f"col-{i}": name for i, name in batch.mapping["columns"].items()}
    manager_client.post(f"/intake/imports/{batch.id}", data=columns)
    jobs.run_task(_task("import_preview").id)
    manager_client.post(f"/intake/imports/{batch.id}/run")
    run = _task("import_run")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=app.config["REDIS_URL"],
               CRM_INSTANCE_PATH=app.instance_path, SECRET_KEY="test-secret", CRM_IMPORT_CHUNK_ROWS="10")  # fmt: skip
    log = open(Path(app.instance_path) / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "workers.worker", "--burst"], cwd=ROOT, env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            db.session.expire_all()
            if db.session.get(ImportBatch, batch.id).rows_done >= 50:
                break
            time.sleep(0.01)
        for pid in [*_children(worker.pid), worker.pid]:  # the work horse (own session), then the worker
            os.kill(pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=10)
        log.close()
    db.session.expire_all()
    done_before = db.session.get(ImportBatch, batch.id).rows_done
    assert 50 <= done_before < 1000, (Path(app.instance_path) / "worker.log").read_text()[-3000:]
    assert _customers() == done_before
    assert db.session.get(Task, run.id).status == "running"
    later = clock.now() + timedelta(seconds=5)
    assert tasks.detect_stuck(db.session, later) == [run.id]
    db.session.expire_all()
    assert db.session.get(Task, run.id).status == "failed"
    assert db.session.get(ImportBatch, batch.id).status == "failed"
    page = manager_client.get(f"/tasks/{run.id}", headers={"HX-Request": "true"})
    assert "后台进程中断" in page.text and "重试" in page.text
    manager_client.post(f"/tasks/{run.id}/retry")
    jobs.run_task(run.id)
    db.session.expire_all()
    batch = db.session.get(ImportBatch, batch.id)
    assert (batch.status, batch.rows_created, batch.rows_done) == ("imported", 1000, 1000)
    assert _customers() == 1000  # every row once
    assert db.session.scalar(select(func.count(func.distinct(Customer.phone_key)))) == 1000


def test_with_redis_down_a_big_task_says_it_is_queued_and_starts_when_redis_is_back(
    app, manager_client, pool
):
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    app.extensions.pop("crm_redis", None)
    batch = _upload(manager_client, _xlsx(100), pool)
    columns = {f"col-{i}": name for i, name in batch.mapping["columns"].items()}
    started = time.monotonic()
    page = manager_client.post(f"/intake/imports/{batch.id}", data=columns)
    assert time.monotonic() - started < 3
    task = _task("import_preview")
    assert task.status == "queued" and task.job_id is None
    assert "后台服务暂时不可用" in page.text and "自动开始" in page.text
    from tests.conftest import redis_url_for_tests

    app.config["REDIS_URL"] = redis_url_for_tests()
    app.extensions.pop("crm_redis_down_until", None)
    assert tasks.watch(db.session, clock.now())["submitted"] == 1
    db.session.refresh(task)
    assert task.job_id and queues.get_queue().fetch_job(task.job_id) is not None
    queues.get_queue().empty()


def test_a_small_import_still_runs_inline_when_that_is_faster(app, manager_client, pool):
    app.config["CRM_TASK_INLINE_MAX"] = 1000
    batch = _upload(manager_client, _xlsx(20), pool)
    run = _preview_and_run(manager_client, batch)
    assert run.status == "done" and _customers() == 18


def test_a_batch_stuck_importing_without_a_working_task_is_marked_failed(manager_client, pool, manager):
    batch = ImportBatch(user_id=manager.id, pool_id=pool.id, filename="x.xlsx", file_hash="1" * 64,
                        mapping={"kind": "xlsx"}, status="importing", created_at=clock.now() - timedelta(hours=1))  # fmt: skip
    db.session.add(batch)
    db.session.commit()
    page = manager_client.get("/intake/imports")
    assert "导入中" not in page.text
    db.session.refresh(batch)
    assert batch.status == "failed"


def test_only_the_owner_or_an_admin_sees_a_task(manager_client, rep_client, admin_client, manager):
    task = Task(kind="import_run", owner_id=manager.id, params={"batch_id": 0}, created_at=clock.now())
    db.session.add(task)
    db.session.commit()
    assert rep_client.get(f"/tasks/{task.id}").status_code == 404
    assert rep_client.post(f"/tasks/{task.id}/cancel").status_code == 404
    assert admin_client.get(f"/tasks/{task.id}").status_code == 200
    page = manager_client.get("/tasks")
    assert f"#{task.id}" in page.text


def test_a_departing_reps_many_customers_move_in_a_background_task(app, admin_client, make, rep, admin, redis_conn,
                                                                     monkeypatch):  # fmt: skip
    from crm.models import EventKind, PoolEvent, Role, User
    from crm.pool import departure

    monkeypatch.setattr(departure, "CHUNK", 4)
    colleague = make.user(Role.REP, team=rep.team, name="小赵", cap=50)
    pool = make.pool(members=[rep])
    held = [make.customer(pool, owner=rep).id for _ in range(10)]
    resp = admin_client.post(
        f"/users/{rep.id}/handover",
        data={"ho-mode": "user", "ho-user_id": colleague.id, "ho-reason": "离职交接", "ho-deactivate": "y"},
    )
    task = _task("handover")
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/tasks/{task.id}")
    assert task.status == "queued" and task.total == 10
    assert {c.owner_id for c in db.session.scalars(select(Customer).where(Customer.id.in_(held)))} == {rep.id}
    jobs.run_task(task.id)
    db.session.expire_all()
    assert {c.owner_id for c in db.session.scalars(select(Customer).where(Customer.id.in_(held)))} == {
        colleague.id
    }
    assert (
        len(db.session.scalars(select(PoolEvent).where(PoolEvent.kind == EventKind.TRANSFERRED)).all()) == 10
    )
    assert not db.session.get(User, rep.id).active
    page = admin_client.get(f"/tasks/{task.id}")
    assert "已把 小王 的 10 个客户移交给 小赵" in page.text and "已停用该账号" in page.text


def test_a_background_handover_over_the_receivers_cap_is_refused_before_it_starts(admin_client, make, rep):
    from crm.models import Role

    colleague = make.user(Role.REP, team=rep.team, name="小赵", cap=2)
    pool = make.pool(members=[rep])
    for _ in range(3):
        make.customer(pool, owner=rep)
    resp = admin_client.post(
        f"/users/{rep.id}/handover", data={"ho-mode": "user", "ho-user_id": colleague.id}
    )
    assert resp.status_code == 303 and _task("handover") is None


def test_a_score_recompute_runs_as_a_task_with_its_progress(app, make, admin, redis_conn):
    pool = make.pool("池")
    for _ in range(5):
        make.customer(pool)
    task = tasks.start(db.session, "score_recompute", admin, clock.now(), total=5, inline_max=0)
    assert task.status == "queued" and task.job_id
    jobs.run_task(task.id)
    db.session.refresh(task)
    assert (task.status, task.done, task.result["customers"]) == ("done", 5, 5)
    assert "已重算 5 位客户的评分" in tasks.summary(task)


def test_a_pool_admin_exports_a_whole_pool_in_the_background_and_downloads_it(manager_client, rep_client, make,
                                                                                manager, redis_conn):  # fmt: skip
    pool = make.pool("华东池", admins=[manager])
    for i in range(7):
        make.customer(pool, name=f"=公司{i}")
    resp = manager_client.post(f"/pools/{pool.id}/export", data={"fmt": "csv"})
    task = _task("pool_export")
    assert resp.status_code == 303 and task.status == "queued" and task.total == 7
    assert rep_client.post(f"/pools/{pool.id}/export", data={"fmt": "csv"}).status_code == 403
    jobs.run_task(task.id)
    page = manager_client.get(f"/tasks/{task.id}")
    assert "已导出「华东池」的 7 个客户" in page.text and "下载文件" in page.text
    download = manager_client.get(f"/tasks/{task.id}/file")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    lines = download.data.decode("utf-8-sig").splitlines()
    assert len(lines) == 8 and lines[0].startswith("编号,公司名称") and ",'=公司0," in lines[1]
    assert rep_client.get(f"/tasks/{task.id}/file").status_code == 404
