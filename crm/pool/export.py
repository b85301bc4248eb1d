"""导出公海: a whole pool's customers as CSV or xlsx, produced by a background task (crm/tasks) and
downloaded from the task when ready. Pool admins only (a pool's full contact list is sensitive); every
cell is formula-escaped (``spreadsheet.safe_cell``)."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm import clock
from crm.intake.spreadsheet import safe_cell
from crm.models import Customer, Pool, Task, User
from crm.permissions import is_pool_admin

CHUNK = 2000


_FIELDS = ("id", "name", "contact_name", "phone", "email", "wechat", "industry", "region", "company_size", "channel",
           "campaign", "grade", "score", "owner_id", "pool_entered_at", "created_at")  # fmt: skip


def headers() -> list[str]:
    return [_("编号"), _("公司名称"), _("联系人"), _("电话"), _("邮箱"), _("微信"), _("行业"), _("地区"),
            _("公司规模"), _("渠道"), _("市场活动"), _("等级"), _("评分"), _("负责人"), _("进入公海时间"),
            _("创建时间")]  # fmt: skip


class ExportRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def start(session: Session, pool: Pool, actor: User, fmt: str, now: datetime) -> Task:
    """Check the actor administers the pool, then start the export task."""
    from crm.tasks import services as tasks

    if fmt not in ("csv", "xlsx"):
        raise ExportRefused(_("只支持 CSV 或 Excel 格式。"))
    if not is_pool_admin(session, actor, pool):
        raise ExportRefused(_("只有「%(pool)s」的管理员可以导出。", pool=pool.name))
    total = session.scalar(
        select(func.count())
        .select_from(Customer)
        .where(Customer.pool_id == pool.id, Customer.merged_into_id.is_(None))
    )
    return tasks.start(session, "pool_export", actor, now, params={"pool_id": pool.id, "fmt": fmt}, total=total,
                       ref=f"pool-export:{pool.id}")  # fmt: skip


def export_task(session: Session, task: Task, progress) -> dict:
    """Write the pool's customers in id order, ``CHUNK`` at a time, to the task's file."""
    from crm.tasks.services import TaskFailed, files_dir

    pool = session.get(Pool, task.params["pool_id"])
    actor = session.get(User, task.owner_id)
    if pool is None or not is_pool_admin(session, actor, pool):
        raise TaskFailed(_("只有该公海的管理员可以导出。"))
    fmt = task.params["fmt"]
    owners = dict(session.execute(select(User.id, User.name)).all())
    rows: list[list] = []
    last_id = 0
    progress(0, stage="work")
    while True:
        chunk = session.execute(
            select(*(getattr(Customer, c) for c in _FIELDS))
            .where(Customer.pool_id == pool.id, Customer.merged_into_id.is_(None), Customer.id > last_id)
            .order_by(Customer.id)
            .limit(CHUNK)
        ).all()
        if not chunk:
            break
        for c in chunk:
            rows.append([c.id, c.name, c.contact_name, c.phone, c.email, c.wechat, c.industry, c.region,
                         c.company_size, c.channel, c.campaign, c.grade, c.score, owners.get(c.owner_id),
                         _local(c.pool_entered_at), _local(c.created_at)])  # fmt: skip
        last_id = chunk[-1].id
        progress(len(rows))
    progress(len(rows), stage="write")
    name = f"pool-{pool.id}-{task.id}.{fmt}"
    path = files_dir() / name
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(headers())
        writer.writerows([[safe_cell("" if v is None else v) for v in row] for row in rows])
        path.write_text("\ufeff" + buffer.getvalue(), encoding="utf-8")
    else:
        from crm.intake import spreadsheet

        path.write_bytes(spreadsheet.write(headers(), rows, "xlsx"))
    stamp = clock.local(clock.now()).strftime("%Y%m%d-%H%M")
    return {"file": name, "download_name": f"{pool.name}-{stamp}.{fmt}", "rows": len(rows), "pool": pool.name}


def summary(task: Task) -> str:
    r = task.result
    return _("已导出「%(pool)s」的 %(n)s 个客户,可以下载了。", pool=r.get("pool", ""), n=r.get("rows", 0))


def _local(value: datetime | None) -> str:
    return clock.local(value).strftime("%Y-%m-%d %H:%M") if value else ""
