"""Background tasks: start a long operation as an rq job with a ``Task`` row, report its progress at most
once a second (checking the cancel flag), find tasks whose worker died, retry and cancel.

Decisions:
- A task's handler is named by ``kind`` in ``KINDS`` (a dotted path, as microblog launches tasks by
  name), so the worker imports only what it runs. A handler is ``handler(session, task, progress) -> dict``
  and must be safe to run again after a crash (it resumes from what it committed).
- Small work runs inline in the request when that is faster than queueing (``inline_max``); with Redis
  unreachable a small task runs inline too, and a large one stays ``queued`` and says so: the watchdog
  (cron) and the page's own poll submit it again once Redis answers. A request never waits on Redis
  longer than ``crm.queues``' connect timeout, once per ``REDIS_RETRY_SECONDS``.
- Progress is written on its own connection and transaction (the handler's session may be mid-work), at
  most every ``PROGRESS_SECONDS``; each write is the heartbeat. A task ``running`` with no heartbeat for
  ``CRM_TASK_STUCK_SECONDS`` (its worker was killed) is marked failed, with a retry button.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm import clock
from crm.extensions import db
from crm.models import ReminderKind, Task, TaskStatus, User
from crm.notify import notify

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 1.0
STUCK_SECONDS = 60
JOB_TIMEOUT = 3 * 3600  # rq's limit per run; a task's own heartbeat says much sooner that it is stuck
RUN_JOB = "workers.jobs.run_task"


class TaskCancelled(Exception):
    """Raised inside a handler by ``Progress`` when the owner asked to stop."""


class TaskFailed(Exception):
    """A handler's refusal in words for people (the task fails with this message)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TaskKind:
    handler: str  # "module:function", called as handler(session, task, progress) -> dict
    label: object  # what the task is, for people
    summary: str | None = None  # "module:function"(task) -> str: the result in the reader's language
    on_stop: str | None = None  # "module:function"(session, task): tidy up after a failure or cancel
    unit: object = _l("行")


KINDS: dict[str, TaskKind] = {
    "import_preview": TaskKind(
        "crm.intake.importer:preview_task", _l("导入预览"), "crm.intake.importer:task_summary",
        "crm.intake.importer:task_stopped",
    ),
    "import_run": TaskKind(
        "crm.intake.importer:run_task", _l("导入线索"), "crm.intake.importer:task_summary",
        "crm.intake.importer:task_stopped",
    ),
    "score_recompute": TaskKind(
        "crm.tasks.builtin:score_recompute", _l("按新规则重算评分"), "crm.tasks.builtin:score_summary",
        unit=_l("个客户"),
    ),
    "pool_export": TaskKind(
        "crm.pool.export:export_task", _l("导出公海客户"), "crm.pool.export:summary", unit=_l("个客户"),
    ),
    "handover": TaskKind(
        "crm.pool.departure:handover_task", _l("离职/休假交接"), "crm.pool.departure:summary", unit=_l("个客户"),
    ),
}  # fmt: skip

STAGES = {
    "read": _l("读取文件"),
    "validate": _l("校验数据"),
    "check": _l("查找已有客户"),
    "import": _l("导入数据"),
    "write": _l("生成文件"),
    "work": _l("处理中"),
}


def _resolve(path: str) -> Callable:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def kind_of(task: Task) -> TaskKind:
    return KINDS[task.kind]


# ---------------------------------------------------------------- starting


def start(
    session: Session,
    kind: str,
    owner: User,
    now: datetime,
    *,
    params: dict | None = None,
    total: int = 0,
    ref: str | None = None,
    inline_max: int | None = None,
) -> Task:
    """Record a task and run it: inline when ``total <= inline_max`` (small work), else as an rq job;
    with Redis unreachable, inline when small, else left ``queued`` (see the module docstring). Commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}")
    task = Task(
        kind=kind, owner_id=owner.id, ref=ref, params=params or {}, status=TaskStatus.QUEUED, stage="",
        done=0, total=total, errors=0, cancel_requested=False, attempts=0, created_at=now,
    )  # fmt: skip
    session.add(task)
    session.commit()
    task_id = task.id
    if total <= (inline_limit() if inline_max is None else inline_max):
        execute(session, task_id)
    else:
        submit(session, task)
    return session.get(Task, task_id, populate_existing=True)


def inline_limit() -> int:
    return int(current_app.config.get("CRM_TASK_INLINE_MAX", 1000))


def submit(session: Session, task: Task, *, inline_max: int = -1) -> bool:
    """Hand a queued task to the worker. False when Redis is unreachable (the task stays queued; small
    ones — ``total <= inline_max`` — run here instead). Commits."""
    from crm import queues

    job_id = f"task-{task.id}-{secrets.token_hex(4)}"  # unique even if a test database restarts its ids
    job = queues.enqueue(
        RUN_JOB, task.id, job_id=job_id, job_timeout=JOB_TIMEOUT, result_ttl=3600, failure_ttl=86400
    )
    if job is None:
        if task.total <= inline_max:
            execute(session, task.id)
            return True
        return False
    session.execute(update(Task).where(Task.id == task.id).values(job_id=job.id))
    session.commit()
    return True


def resubmit_waiting(session: Session, *, ids: list[int] | None = None, limit: int = 20) -> int:
    """Submit queued tasks that never reached Redis (it was down when they were started). Returns how
    many were handed over."""
    query = select(Task).where(Task.status == TaskStatus.QUEUED, Task.job_id.is_(None)).order_by(Task.id)
    if ids is not None:
        query = query.where(Task.id.in_(ids))
    handed = 0
    for task in session.scalars(query.limit(limit)).all():
        if not submit(session, task):
            break
        handed += 1
    return handed


# ---------------------------------------------------------------- running


class Progress:
    """Called by a handler as it goes: ``progress(done, total=…, errors=…, stage=…)``. Writes at most once
    per ``every`` seconds (or when ``force``), on its own connection, and raises ``TaskCancelled`` when the
    owner asked to stop."""

    def __init__(self, task: Task, every: float = PROGRESS_SECONDS):
        self.task_id = task.id
        self.every = every
        self.values = {"done": task.done, "total": task.total, "errors": task.errors, "stage": task.stage}
        self._last = 0.0
        self.writes = 0

    def __call__(
        self,
        done: int | None = None,
        *,
        total: int | None = None,
        errors: int | None = None,
        stage: str | None = None,
        force: bool = False,
    ) -> None:
        for key, value in (("done", done), ("total", total), ("errors", errors), ("stage", stage)):
            if value is not None:
                self.values[key] = value
        if stage is not None:
            force = True  # a new stage is shown at once
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        self.writes += 1
        at = clock.now()
        extra = {"stage_started_at": at} if stage is not None else {}
        with db.engine.begin() as conn:
            conn.execute(
                update(Task).where(Task.id == self.task_id).values(heartbeat_at=at, **self.values, **extra)
            )
            cancel = conn.scalar(select(Task.cancel_requested).where(Task.id == self.task_id))
        if cancel:
            raise TaskCancelled()

    @contextlib.contextmanager
    def beating(self):
        """Keep the heartbeat going from a thread during one long call that cannot report (openpyxl opening a
        workbook parses all its shared strings first). The cancel flag is seen at the next report after it."""
        stop = threading.Event()
        app = current_app._get_current_object()

        def beat() -> None:
            with app.app_context():
                while not stop.wait(self.every):
                    with db.engine.begin() as conn:
                        conn.execute(
                            update(Task).where(Task.id == self.task_id).values(heartbeat_at=clock.now())
                        )

        thread = threading.Thread(target=beat, name=f"task-{self.task_id}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def execute(session: Session, task_id: int) -> Task | None:
    """Run a queued task here (the rq job, or inline for small work). None when it was not queued (done,
    cancelled before it started, or running elsewhere). Commits."""
    now = clock.now()
    claimed = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.QUEUED)
        .values(
            status=TaskStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=Task.attempts + 1,
            error=None,
        )  # fmt: skip
    ).rowcount
    session.commit()
    if claimed != 1:
        return None
    task = session.get(Task, task_id, populate_existing=True)
    kind = kind_of(task)
    progress = Progress(task)
    try:
        if task.cancel_requested:
            raise TaskCancelled()
        result = _resolve(kind.handler)(session, task, progress)
    except TaskCancelled:
        session.rollback()
        return _finish(session, task_id, TaskStatus.CANCELLED, progress)
    except TaskFailed as exc:
        session.rollback()
        return _finish(session, task_id, TaskStatus.FAILED, progress, error=exc.message)
    except Exception as exc:
        session.rollback()
        log.exception("task %s (%s) failed", task_id, task.kind)
        return _finish(
            session, task_id, TaskStatus.FAILED, progress, error=_("出错了: %(err)s", err=str(exc)[:300])
        )
    return _finish(session, task_id, TaskStatus.DONE, progress, result=result or {})


def _finish(
    session: Session,
    task_id: int,
    status: str,
    progress: Progress,
    *,
    result: dict | None = None,
    error: str | None = None,
) -> Task:
    now = clock.now()
    values = dict(progress.values, status=status, finished_at=now, heartbeat_at=now)
    if result is not None:
        values["result"] = result
    if error is not None:
        values["error"] = error
    session.execute(update(Task).where(Task.id == task_id).values(**values))
    session.commit()
    task = session.get(Task, task_id, populate_existing=True)
    if status != TaskStatus.DONE:
        _stopped(session, task)
    _notify_owner(session, task, now)
    session.commit()
    return task


def _stopped(session: Session, task: Task) -> None:
    hook = kind_of(task).on_stop
    if hook:
        _resolve(hook)(session, task)
        session.commit()


def _notify_owner(session: Session, task: Task, now: datetime) -> None:
    label = str(kind_of(task).label)
    if task.status == TaskStatus.DONE:
        title = _("后台任务「%(what)s」已完成", what=label)
    elif task.status == TaskStatus.FAILED:
        title = _("后台任务「%(what)s」失败了,可在任务页重试", what=label)
    else:
        return  # the owner cancelled it and knows
    notify(
        session, user_id=task.owner_id, kind=ReminderKind.SYSTEM, title=title, body=summary(task) or task.error,
        unique_key=f"task:{task.id}:{task.attempts}:{task.status}", due_at=now, now=now,
    )  # fmt: skip


def summary(task: Task) -> str:
    """The result in the reader's language ("" when the kind has none or there is no result yet)."""
    path = kind_of(task).summary
    if not path or not task.result:
        return ""
    return _resolve(path)(task)


# ---------------------------------------------------------------- watching, cancel, retry


def stuck_seconds() -> int:
    return int(current_app.config.get("CRM_TASK_STUCK_SECONDS", STUCK_SECONDS))


def detect_stuck(session: Session, now: datetime, *, ids: list[int] | None = None) -> list[int]:
    """Mark failed every running task with no heartbeat for ``stuck_seconds()`` (its worker died). Returns
    their ids. Commits."""
    limit = now - timedelta(seconds=stuck_seconds())
    query = select(Task.id).where(Task.status == TaskStatus.RUNNING, Task.heartbeat_at < limit)
    if ids is not None:
        query = query.where(Task.id.in_(ids))
    marked = []
    for task_id in session.scalars(query).all():
        done = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == TaskStatus.RUNNING, Task.heartbeat_at < limit)
            .values(
                status=TaskStatus.FAILED,
                finished_at=now,
                error=_("后台进程中断 (超过 %(n)s 秒没有响应),可以重试。", n=stuck_seconds()),
            )  # fmt: skip
        ).rowcount
        session.commit()
        if done:
            marked.append(task_id)
            task = session.get(Task, task_id, populate_existing=True)
            _stopped(session, task)
            _notify_owner(session, task, now)
            session.commit()
    return marked


def watch(session: Session, now: datetime) -> dict:
    """The watchdog (cron): stuck tasks marked failed, tasks queued while Redis was down submitted."""
    return {"stuck": detect_stuck(session, now), "submitted": resubmit_waiting(session)}


def refresh(session: Session, task: Task, now: datetime) -> Task:
    """What a poll of the task does besides reading it: detect it stuck, or submit it if it is still
    waiting for Redis."""
    if task.status == TaskStatus.RUNNING and detect_stuck(session, now, ids=[task.id]):
        session.refresh(task)
    elif task.status == TaskStatus.QUEUED and task.job_id is None:
        resubmit_waiting(session, ids=[task.id])
        session.refresh(task)
    return task


def cancel(session: Session, task: Task, now: datetime) -> Task:
    """Ask the task to stop: a queued one stops at once, a running one at its next progress report."""
    session.execute(update(Task).where(Task.id == task.id).values(cancel_requested=True))
    stopped = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == TaskStatus.QUEUED)
        .values(status=TaskStatus.CANCELLED, finished_at=now)
    ).rowcount
    session.commit()
    session.refresh(task)
    if stopped:
        _stopped(session, task)
    return task


def retry(session: Session, task: Task, now: datetime) -> Task:
    """Run a failed or cancelled task again (its handler resumes from what it had committed)."""
    again = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status.in_((TaskStatus.FAILED, TaskStatus.CANCELLED)))
        .values(status=TaskStatus.QUEUED, cancel_requested=False, error=None, finished_at=None, job_id=None)
    ).rowcount
    session.commit()
    session.refresh(task)
    if again:
        submit(session, task, inline_max=inline_limit())
        session.refresh(task)
    return task


def latest(session: Session, ref: str, kinds: tuple[str, ...] | None = None) -> Task | None:
    query = select(Task).where(Task.ref == ref).order_by(Task.id.desc()).limit(1)
    if kinds:
        query = query.where(Task.kind.in_(kinds))
    return session.scalar(query)


def eta_seconds(task: Task, now: datetime) -> int | None:
    """Time left from the rate so far in the current stage (None before there is a rate)."""
    since = task.stage_started_at or task.started_at
    if task.status != TaskStatus.RUNNING or not since or not task.done or not task.total:
        return None
    elapsed = ((task.heartbeat_at or now) - since).total_seconds()
    if elapsed <= 0:
        return None
    return max(0, round((task.total - task.done) * elapsed / task.done))


def files_dir() -> Path:
    """Where tasks put the files they produce (exports), under the instance folder."""
    path = Path(current_app.instance_path) / "task-files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def can_see(user: User, task: Task) -> bool:
    return task.owner_id == user.id or user.is_admin


def tasks_for(session: Session, user: User, limit: int = 30) -> list[Task]:
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(Task.owner_id == user.id)
    return list(session.scalars(query))
