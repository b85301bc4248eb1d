"""后台任务 screens: a task's progress (the fragment re-polls itself while the task runs), cancel, retry,
the file a task produced, and the list of one's recent tasks."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, request, send_file

from crm import clock
from crm.access import access
from crm.extensions import db
from crm.htmx import render, trigger
from crm.models import Role, Task, TaskStatus
from crm.tasks import services

bp = Blueprint("tasks", __name__)


def _task_or_404(task_id: int) -> Task:
    task = db.session.get(Task, task_id)
    if task is None or not services.can_see(_user(), task):
        abort(404)
    return task


def _user():
    from flask_login import current_user

    return current_user


@bp.app_context_processor
def _task_view() -> dict:
    """``task_view(task)`` for ``tasks/_progress.html``, which any page may include."""

    def task_view(task: Task) -> dict:
        return {"kind": services.kind_of(task), "stages": services.STAGES, "summary": services.summary(task),
                "eta": services.eta_seconds(task, clock.now())}  # fmt: skip

    return {"task_view": task_view}


def _show(task: Task, was: str | None = None):
    response = render("tasks/task.html", "task_progress", task=task, kind=services.kind_of(task))
    if was in TaskStatus.ACTIVE and task.status in TaskStatus.FINISHED:
        # Tell the page the task ended, so the parts showing its result refresh themselves.
        trigger(response, "taskFinished", {"id": task.id, "ref": task.ref, "status": task.status})
    return response


@bp.route("/tasks")
@access(Role.REP)
def index():
    """后台任务: your recent long operations (imports, exports, bulk moves) and how they ended."""
    tasks = services.tasks_for(db.session, _user())
    return render("tasks/index.html", tasks=tasks, kinds=services.KINDS)


@bp.route("/tasks/<int:task_id>")
@access(Role.REP)
def show(task_id: int):
    """One task: the progress fragment (re-polled every second while it runs) or its page."""
    task = services.refresh(db.session, _task_or_404(task_id), clock.now())
    return _show(task, request.args.get("was"))


@bp.route("/tasks/<int:task_id>/cancel", methods=["POST"])
@access(Role.REP)
def cancel(task_id: int):
    """Stop a queued or running task (a running import keeps the rows it has committed)."""
    task = services.cancel(db.session, _task_or_404(task_id), clock.now())
    return _show(task, TaskStatus.RUNNING)


@bp.route("/tasks/<int:task_id>/retry", methods=["POST"])
@access(Role.REP)
def retry(task_id: int):
    """Run a failed or cancelled task again; it resumes after what it had committed."""
    task = services.retry(db.session, _task_or_404(task_id), clock.now())
    return _show(task)


@bp.route("/tasks/<int:task_id>/file")
@access(Role.REP)
def download(task_id: int):
    """The file a finished task produced (an export)."""
    task = _task_or_404(task_id)
    name = (task.result or {}).get("file")
    if task.status != TaskStatus.DONE or not name:
        abort(404)
    path = services.files_dir() / Path(name).name
    if not path.exists():
        abort(410)
    return send_file(path, as_attachment=True, download_name=task.result.get("download_name") or path.name,
                     max_age=0)  # fmt: skip
