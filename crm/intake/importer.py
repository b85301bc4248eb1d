"""Excel/CSV import (批量导入): upload → column mapping (guessed from Chinese/English headers) → preview with
per-row errors (row, column, reason) → import of the good rows → a downloadable error file.

Decisions:
- The uploaded file is kept under ``instance/imports/<sha256>.<ext>`` so the mapping and import steps
  need no second upload; the batch records its hash. A file already imported (same hash) is refused at
  upload — importing the same file twice creates nothing new — and its rows would anyway be exact
  duplicates of what the first import created (attached, not created).
- A row that repeats an earlier row's phone / email / WeChat in the same file is an error ("与第 N 行
  重复"): it is reported, not imported. Rows matching existing customers are not errors: they are
  attached to those customers (撞单), and their owners get one summary notification per batch.
- All good rows are imported in ONE transaction with the batch's status and counts (``intake``): a
  failure imports nothing and marks the batch failed; there is never a half-imported file. Routing by
  score runs after that commit, per lead.
- The fuzzy company check runs on import (possible duplicates go to the conflict queue), not in the
  preview, which only validates and counts exact duplicates so it stays quick.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
import shutil
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm import clock
from crm.intake import spreadsheet
from crm.intake.dedupe import exact_matches
from crm.intake.inserts import release_statement_cache
from crm.intake.services import UTM_KEYS, FieldError, LeadData, Prepared, intake, prepare
from crm.models import ImportBatch, Pool, User
from crm.permissions import is_pool_admin

# field, label, header synonyms (compared after folding case, width, spaces and punctuation)
FIELDS: list[tuple[str, object, tuple[str, ...]]] = [
    ("name", _l("公司名称"), ("公司", "公司名称", "客户名称", "企业名称", "单位", "单位名称", "客户", "公司全称",
                           "company", "companyname", "account", "accountname", "organization", "organisation")),
    ("contact_name", _l("联系人"), ("联系人", "姓名", "联系人姓名", "名字", "客户姓名", "contact", "contactname",
                                  "name", "fullname")),
    ("phone", _l("电话"), ("电话", "手机", "手机号", "手机号码", "联系电话", "电话号码", "座机", "联系方式", "mobile",
                          "phone", "tel", "telephone", "cell", "mobilephone", "phonenumber")),
    ("email", _l("邮箱"), ("邮箱", "电子邮箱", "邮件", "邮箱地址", "email", "e-mail", "mail", "emailaddress")),
    ("wechat", _l("微信"), ("微信", "微信号", "wechat", "weixin", "wx", "wechatid")),
    ("job_title", _l("职位"), ("职位", "职务", "岗位", "title", "jobtitle", "position")),
    ("job_level", _l("职级"), ("职级", "级别", "层级", "joblevel", "seniority", "level")),
    ("industry", _l("行业"), ("行业", "所属行业", "industry")),
    ("region", _l("地区"), ("地区", "区域", "省份", "城市", "所在地", "所在地区", "region", "area", "province", "city")),
    ("company_size", _l("公司规模"), ("公司规模", "规模", "人数", "员工数", "员工人数", "企业规模", "companysize",
                                    "employees", "size", "headcount")),
    ("address", _l("地址"), ("地址", "公司地址", "详细地址", "address")),
    ("channel", _l("渠道"), ("渠道", "来源", "来源渠道", "线索来源", "客户来源", "channel", "source", "leadsource")),
    ("campaign", _l("市场活动"), ("活动", "市场活动", "活动名称", "campaign")),
    ("notes", _l("备注"), ("备注", "说明", "需求", "留言", "描述", "notes", "note", "remark", "remarks", "comment",
                          "comments", "description")),
    ("arrived_at", _l("到达时间"), ("到达时间", "创建时间", "录入时间", "留资时间", "日期", "时间", "arrivedat",
                                  "createdat", "date", "created", "time")),
] + [(key, key, (key.replace("_", ""),)) for key in UTM_KEYS]  # fmt: skip
FIELD_LABELS = {name: label for name, label, _syn in FIELDS}
STALE_IMPORT = timedelta(minutes=15)
_SCIENTIFIC = re.compile(r"^\d(\.\d+)?e\+?\d+$", re.IGNORECASE)


class ImportError_(ValueError):
    """A refused upload or step; ``code`` for the CLI and tests, ``message`` for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _fold_header(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(ch for ch in text if ch.isalnum() or ch == "-").replace("-", "") or text


def guess_mapping(headers: list[str]) -> dict[str, str]:
    """{column index: field} from the headers: exact synonyms first, then a synonym inside the header."""
    folded = [_fold_header(h) for h in headers]
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for exact in (True, False):
        for index, header in enumerate(folded):
            if str(index) in mapping or not header:
                continue
            for name, _label, synonyms in FIELDS:
                if name in taken:
                    continue
                keys = [_fold_header(s) for s in synonyms]
                hit = header in keys if exact else any(len(k) >= 2 and k in header for k in keys
                                                        if not k.isascii() or len(k) >= 4)  # fmt: skip
                if hit:
                    mapping[str(index)] = name
                    taken.add(name)
                    break
    return mapping


# ---------------------------------------------------------------- files


def storage_dir() -> Path:
    # CRM_UPLOAD_DIR: a folder every web host and worker shares (NFS…) when there are several hosts.
    path = Path(current_app.config.get("CRM_UPLOAD_DIR") or Path(current_app.instance_path) / "imports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def stored_path(batch: ImportBatch) -> Path:
    return storage_dir() / f"{batch.file_hash}.{batch.mapping.get('kind', 'xlsx')}"


def create_batch(
    session: Session,
    user: User,
    pool: Pool,
    source_path: Path,
    filename: str,
    now: datetime,
    *,
    channel: str = "",
    campaign: str = "",
) -> ImportBatch:
    """Check the file, store it and open a batch in ``preview`` with a guessed mapping. Commits."""
    if not is_pool_admin(session, user, pool):
        raise ImportError_("forbidden", _("你不是「%(pool)s」的管理员,不能向其中导入。", pool=pool.name))
    if pool.deleted_at is not None or not pool.enabled:
        raise ImportError_("pool_disabled", _("「%(pool)s」已停用,不能导入。", pool=pool.name))
    with open(source_path, "rb") as fh:
        head = fh.read(8)
    try:
        kind = spreadsheet.kind_of(filename, head)
        spreadsheet.check(source_path, kind)
        headers, first_rows, estimate = spreadsheet.head(source_path, kind)
    except spreadsheet.SpreadsheetError as exc:
        raise ImportError_(exc.code, exc.message) from exc
    digest = hashlib.sha256()
    with open(source_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    file_hash = digest.hexdigest()
    done = session.scalar(
        select(ImportBatch)
        .where(ImportBatch.file_hash == file_hash, ImportBatch.status == "imported")
        .order_by(ImportBatch.id)
        .limit(1)
    )
    if done is not None:
        raise ImportError_(
            "already_imported",
            _(
                "该文件已于 %(when)s 导入过 (批次 #%(id)s),不会重复导入。",
                when=clock.local(done.finished_at or done.created_at).strftime("%Y-%m-%d %H:%M"),
                id=done.id,
            ),
        )
    target = storage_dir() / f"{file_hash}.{kind}"
    if not target.exists():
        shutil.copyfile(source_path, target)
    samples = [[_text(v) if not isinstance(v, int | float) else v for v in row] for row in first_rows]
    batch = ImportBatch(
        user_id=user.id, pool_id=pool.id, filename=(filename or "import")[:200], file_hash=file_hash,
        mapping={"kind": kind, "columns": guess_mapping(headers), "channel": channel.strip(),
                 "campaign": campaign.strip(), "headers": headers, "samples": samples},
        status="preview", rows_total=estimate or 0, created_at=now,
    )  # fmt: skip
    session.add(batch)
    session.commit()
    return batch


_PARSED: dict[str, tuple[list[str], list[tuple[int, list]]]] = {}
_PARSED_KEEP = 2
_CACHE_ROWS = 5000


def load(
    batch: ImportBatch, progress: Callable[[int], None] | None = None
) -> tuple[list[str], list[tuple[int, list]]]:
    """Headers and rows of the batch's stored file. The last couple of files parsed are kept in memory,
    so preview and import right after it do not parse a 10,000-row workbook twice (files are named by
    their hash and never change, so the cache cannot go stale)."""
    path = stored_path(batch)
    if not path.exists():
        raise ImportError_("file_missing", _("导入文件已不存在,请重新上传。"))
    cached = _PARSED.get(batch.file_hash)
    if cached is not None:
        return cached[0], list(cached[1])
    try:
        parsed = spreadsheet.read(path, batch.mapping.get("kind", "xlsx"), progress)
    except spreadsheet.SpreadsheetError as exc:
        raise ImportError_(exc.code, exc.message) from exc
    if len(parsed[1]) > _CACHE_ROWS:  # a big file is read by a background task, once per task
        return parsed[0], list(parsed[1])
    while len(_PARSED) >= _PARSED_KEEP:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[batch.file_hash] = parsed
    return parsed[0], list(parsed[1])


def set_mapping(session: Session, batch: ImportBatch, columns: dict[str, str]) -> None:
    """Save the column → field choice ("" = ignore the column); a field may be chosen once. Commits."""
    clean: dict[str, str] = {}
    seen: dict[str, str] = {}
    known = {name for name, _l_, _s in FIELDS}
    if batch.rows_done:
        raise ImportError_("partly_imported", _("该批次已导入了一部分,不能再修改列对应,请重试导入。"))
    for index, name in columns.items():
        if not name:
            continue
        if name not in known:
            raise ImportError_("invalid_mapping", _("未知字段: %(name)s", name=name))
        if name in seen:
            raise ImportError_(
                "invalid_mapping", _("「%(field)s」只能对应一列。", field=str(FIELD_LABELS[name]))
            )
        seen[name] = index
        clean[str(index)] = name
    batch.mapping = {**batch.mapping, "columns": clean}
    session.commit()


# ---------------------------------------------------------------- rows → leads


def _arrival(value) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return clock.from_local(value)
    text = str(value).strip().replace("/", "-")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return clock.from_local(datetime.strptime(text, fmt))
        except ValueError:
            continue
    return clock.parse_iso(text)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return clock.local(clock.from_local(value)).strftime("%Y-%m-%d %H:%M")
    return str(value).strip()


@dataclass
class Preview:
    headers: list[str]
    total: int
    prepared: list[Prepared]  # the good rows, ready to import
    errors: list[dict]  # {"row", "column", "reason"}
    error_rows: set[int]
    rows: list[tuple[int, list]] = field(default_factory=list)  # the file's rows, for the error file
    duplicates: list[dict] = field(default_factory=list)  # {"row", "customer", "matched_on", "owned"}
    samples: list[dict] = field(default_factory=list)

    @property
    def new_count(self) -> int:
        return len(self.prepared) - len(self.duplicates)


def build(
    session: Session,
    batch: ImportBatch,
    *,
    check_existing: bool = True,
    progress: Callable[..., None] | None = None,
) -> Preview:
    """Read the file with the batch's mapping and validate every row (no writes). ``progress`` (a
    background task's) hears the rows read, then the rows validated."""
    if progress is not None:
        progress(0, stage="read")
    with progress.beating() if hasattr(progress, "beating") else contextlib.nullcontext():
        headers, rows = load(batch, progress)
    if progress is not None:
        progress(0, total=len(rows), stage="validate")
    columns = {
        int(i): name for i, name in (batch.mapping.get("columns") or {}).items() if int(i) < len(headers)
    }
    column_of = {name: headers[i] or FIELD_LABELS.get(name, name) for i, name in columns.items()}

    def column_name(field_name: str) -> str:
        return str(column_of.get(field_name) or FIELD_LABELS.get(field_name, field_name))

    prepared: list[Prepared] = []
    errors: list[dict] = []
    error_rows: set[int] = set()
    seen: dict[str, int] = {}
    defaults = {
        "channel": batch.mapping.get("channel") or "",
        "campaign": batch.mapping.get("campaign") or "",
    }
    how = {"phone": _("电话"), "email": _("邮箱"), "wechat": _("微信")}  # translated once, not per row
    for position, (number, values) in enumerate(rows):
        if progress is not None and position % 500 == 0:
            progress(position, errors=len(error_rows))
        data: dict = dict(defaults)
        row_errors: list[FieldError] = []
        for index, name in columns.items():
            value = values[index]
            if name == "arrived_at":
                try:
                    data["arrived_at"] = _arrival(value)
                except ValueError:
                    row_errors.append(FieldError("arrived_at", _("不是有效的日期时间。")))
                continue
            if name == "company_size":
                data[name] = value if isinstance(value, int | float) else _text(value)
                continue
            text = _text(value)
            if name == "phone" and _SCIENTIFIC.match(text):
                row_errors.append(
                    FieldError("phone", _("电话被 Excel 转成了科学计数法,请把该列设为文本格式后重新导出。"))
                )
                continue
            if text or name not in defaults:
                data[name] = text
        lead = LeadData.from_dict(data)
        lead.row = number
        p = prepare(lead)
        p.errors = row_errors + p.errors
        if not p.errors:
            for key, field_name in (
                (p.keys.phone_key, "phone"),
                (p.keys.email_key, "email"),
                (p.keys.wechat_key, "wechat"),
            ):
                if key and key in seen:
                    p.errors.append(
                        FieldError(
                            field_name,
                            _("与第 %(row)s 行重复 (%(how)s相同)。", row=seen[key], how=how[field_name]),
                        )
                    )
                    break
            else:
                for key in (p.keys.phone_key, p.keys.email_key, p.keys.wechat_key):
                    if key:
                        seen.setdefault(key, number)
        # Flagged fields of a row that is imported anyway: in the report, not in the error count or file.
        errors.extend(
            {"row": number, "column": column_name(w.field), "reason": str(w.message), "warning": True}
            for w in p.warnings
            if not p.errors
        )
        if p.errors:
            error_rows.add(number)
            errors.extend(
                {"row": number, "column": column_name(e.field), "reason": str(e.message)} for e in p.errors
            )
        else:
            prepared.append(p)
    preview = Preview(
        headers=headers, total=len(rows), prepared=prepared, errors=errors, error_rows=error_rows, rows=rows
    )
    if progress is not None:
        progress(len(rows), errors=len(error_rows), force=True)
    if check_existing and prepared:
        matches = []
        for start in range(0, len(prepared), 5000):  # in parts, so a task's progress keeps beating
            if progress is not None:
                progress(len(rows), stage="check")
            matches += exact_matches(session, [p.keys for p in prepared[start : start + 5000]])
        owners = {}
        for p, match in zip(prepared, matches, strict=True):
            if match is not None:
                preview.duplicates.append(
                    {"row": p.data.row, "customer": match.name, "customer_id": match.customer_id,
                     "matched_on": match.matched_on, "owned": match.owner_id is not None,
                     "owner_id": match.owner_id}
                )  # fmt: skip
                if match.owner_id:
                    owners[match.owner_id] = None
        if owners:
            names = dict(session.execute(select(User.id, User.name).where(User.id.in_(list(owners)))).all())
            for dup in preview.duplicates:
                dup["owner"] = names.get(dup["owner_id"])
    preview.samples = [
        {name: getattr(p.data, name) for name in ("name", "contact_name", "phone", "email", "channel")}
        | {"row": p.data.row}
        for p in prepared[:5]
    ]
    return preview


_PREVIEWS: dict[str, tuple[str, Preview]] = {}


def _mapping_key(batch: ImportBatch) -> str:
    import json

    return json.dumps(batch.mapping, sort_keys=True, ensure_ascii=False)


def _preview_key(batch: ImportBatch) -> str:
    return f"{batch.id}:{batch.file_hash}:{batch.created_at.isoformat()}"


def record_preview(session: Session, batch: ImportBatch, preview: Preview) -> None:
    """Keep the preview's counts and errors on the batch (the batch page and the error file read them);
    the validated rows are kept in memory for the import that usually follows (same mapping only)."""
    if preview.total <= _CACHE_ROWS:
        while len(_PREVIEWS) >= _PARSED_KEEP:
            _PREVIEWS.pop(next(iter(_PREVIEWS)))
        _PREVIEWS[_preview_key(batch)] = (_mapping_key(batch), preview)
    batch.rows_total = preview.total
    batch.rows_error = len(preview.error_rows)
    batch.rows_duplicate = len(preview.duplicates)
    batch.errors = preview.errors
    session.commit()


CHUNK_ROWS = 1000  # at most, per chunk; a background import sizes its chunks to take ~CHUNK_SECONDS
MIN_CHUNK_ROWS = 100
CHUNK_SIZES = (100, 250, 500, 1000)
CHUNK_SECONDS = 1.0


def begin(session: Session, batch_id: int, actor: User, now: datetime) -> ImportBatch:
    """Check that ``actor`` may import the batch and mark it ``importing`` (one importer at a time): a
    previewed, failed or cancelled batch — the last two resume after the rows they had committed."""
    batch = session.get(ImportBatch, batch_id, populate_existing=True)
    if batch is None:
        raise ImportError_("not_found", _("导入批次不存在。"))
    if batch.user_id != actor.id and not actor.is_admin:
        raise ImportError_("forbidden", _("只能导入自己上传的文件。"))
    pool = session.get(Pool, batch.pool_id)
    if pool is None or not is_pool_admin(session, actor, pool):
        raise ImportError_("forbidden", _("你不是该公海池的管理员。"))
    allowed = ImportBatch.status.in_(("preview", "failed", "cancelled")) | (
        (ImportBatch.status == "importing") & (ImportBatch.created_at < now - STALE_IMPORT)
    )
    started = session.execute(
        update(ImportBatch).where(ImportBatch.id == batch.id, allowed).values(status="importing")
    ).rowcount
    session.commit()
    session.refresh(batch)
    if started != 1:
        if batch.status == "imported":
            raise ImportError_("already_imported", _("该批次已导入,不会重复导入。"))
        raise ImportError_("busy", _("该批次正在导入中,请稍候刷新。"))
    return batch


def import_rows(
    session: Session,
    batch: ImportBatch,
    actor: User,
    now: datetime,
    progress: Callable[..., None] | None = None,
) -> ImportBatch:
    """Import the good rows of a batch ``begin`` marked importing, ``CHUNK_ROWS`` at a time. Each chunk is
    one transaction with the batch's resume point (``rows_done``), so a killed worker leaves whole chunks
    and the retry continues after them: no row is imported twice (and a row that somehow were would be
    found as an exact duplicate and attached, not created). A failure marks the batch failed. Commits."""
    pool = session.get(Pool, batch.pool_id)
    try:
        other = session.scalar(
            select(ImportBatch.id).where(
                ImportBatch.file_hash == batch.file_hash,
                ImportBatch.status == "imported",
                ImportBatch.id != batch.id,
            )
        )
        if other:
            raise ImportError_("already_imported", _("该文件已作为批次 #%(id)s 导入过。", id=other))
        cached = _PREVIEWS.pop(_preview_key(batch), None)
        # The rows validated by the preview (same file, same mapping) are imported as they are; duplicates
        # of existing customers are checked again inside intake, under its lock.
        if cached is not None and cached[0] == _mapping_key(batch):
            preview = cached[1]
        else:
            if progress is not None:
                progress(0, stage="read")
            preview = load_validated(batch) or build(session, batch, check_existing=False, progress=progress)
        if not batch.rows_done:
            batch.rows_created = batch.rows_duplicate = 0
        batch.rows_total = preview.total
        batch.rows_error = len(preview.error_rows)
        batch.errors = preview.errors
        session.commit()
        prepared = preview.prepared
        size = limit = int(current_app.config.get("CRM_IMPORT_CHUNK_ROWS", CHUNK_ROWS))
        done = min(batch.rows_done or 0, len(prepared))
        if progress is not None:
            progress(done, total=len(prepared), errors=batch.rows_error, stage="import")
        if not prepared:
            batch.status, batch.finished_at = "imported", now
            session.commit()
        while done < len(prepared):
            chunk = prepared[done : done + size]
            started = time.monotonic()
            intake(
                session, [p.data for p in chunk], source="import", now=now, pool=pool, actor=actor, batch=batch,
                prepared=chunk, batch_final=done + len(chunk) >= len(prepared), below=batch.first_customer_id,
            )  # fmt: skip
            done += len(chunk)
            if progress is not None:
                progress(done)
                # About a second per chunk, so the bar moves at least every couple of seconds on a busy host.
                took = max(time.monotonic() - started, 0.01)
                size = _chunk_size(len(chunk) * CHUNK_SECONDS / took, limit)
        if preview.rows:  # else the preview task wrote them from the same rows
            write_error_files(batch, preview)
        validated_path(batch).unlink(missing_ok=True)
        release_statement_cache()
    except Exception as exc:
        session.rollback()
        from crm.tasks.services import TaskCancelled

        if isinstance(exc, TaskCancelled):
            raise
        mark_stopped(session, batch.id, "failed", now)
        if isinstance(exc, ImportError_):
            raise
        raise ImportError_("failed", _("导入失败: %(err)s", err=str(exc)[:200])) from exc
    session.refresh(batch)
    return batch


def _chunk_size(rows_per_target: float, limit: int) -> int:
    """One of a few sizes (the chunk's statements are cached by psycopg by their text: few sizes, few
    cached statements), at most ``limit``."""
    fitting = [n for n in CHUNK_SIZES if n <= rows_per_target and n <= limit]
    return max(fitting) if fitting else min(MIN_CHUNK_ROWS, limit)


def run(session: Session, batch_id: int, actor: User, now: datetime) -> ImportBatch:
    """Import the good rows of a previewed batch here and now (the CLI; small files). Commits."""
    return import_rows(session, begin(session, batch_id, actor, now), actor, now)


def mark_stopped(session: Session, batch_id: int, status: str, now: datetime) -> None:
    """An importing batch that stopped (failed, cancelled, its worker died): marked so it can be retried."""
    session.execute(
        update(ImportBatch)
        .where(ImportBatch.id == batch_id, ImportBatch.status == "importing")
        .values(status=status, finished_at=now)
    )
    session.commit()


def mark_stuck(session: Session, now: datetime) -> list[int]:
    """Batches left "importing" with no background task still working on them (a worker killed before
    tasks existed, or a task marked failed meanwhile) are marked failed. Returns their ids."""
    from crm.tasks.services import latest

    stuck = []
    for batch in session.scalars(select(ImportBatch).where(ImportBatch.status == "importing")).all():
        task = latest(session, f"import:{batch.id}", ("import_run",))
        if task is not None and task.active:
            continue
        if task is None and batch.created_at > now - STALE_IMPORT:
            continue  # an import run by the CLI, without a task
        mark_stopped(session, batch.id, "failed", now)
        stuck.append(batch.id)
    return stuck


# ---------------------------------------------------------------- as background tasks


def start_preview(session: Session, batch: ImportBatch, actor: User, now: datetime):
    """Validate every row in a background task (inline for a small file). Returns the task."""
    from crm.tasks import services as tasks

    return tasks.start(
        session, "import_preview", actor, now, params={"batch_id": batch.id}, total=batch.rows_total or 0,
        ref=f"import:{batch.id}",
    )  # fmt: skip


def start_import(session: Session, batch_id: int, actor: User, now: datetime):
    """Import a previewed batch in a background task (inline for a small file). Returns the task."""
    from crm.tasks import services as tasks

    batch = begin(session, batch_id, actor, now)
    return tasks.start(
        session, "import_run", actor, now, params={"batch_id": batch.id}, total=batch.rows_total or 0,
        ref=f"import:{batch.id}",
    )  # fmt: skip


def preview_task(session: Session, task, progress) -> dict:
    """The preview as a task: every row validated, counts and errors kept on the batch, the error file
    written; the result holds what the preview step shows."""
    batch = session.get(ImportBatch, task.params["batch_id"])
    if batch is None:
        from crm.tasks.services import TaskFailed

        raise TaskFailed(_("导入批次不存在。"))
    try:
        preview = build(session, batch, progress=progress)
    except ImportError_ as exc:
        from crm.tasks.services import TaskFailed

        raise TaskFailed(exc.message) from exc
    progress(stage="write")
    record_preview(session, batch, preview)
    write_error_files(batch, preview)
    progress(force=True)
    save_validated(batch, preview)
    preview.rows = []
    return {
        "batch_id": batch.id, "mapping": _mapping_key(batch), "total": preview.total,
        "valid": len(preview.prepared), "new": preview.new_count, "error_rows": len(preview.error_rows),
        "duplicates": len(preview.duplicates),
        "duplicate_rows": [{k: d.get(k) for k in ("row", "customer", "owner")} for d in preview.duplicates[:50]],
    }  # fmt: skip


def run_task(session: Session, task, progress) -> dict:
    """The import as a task; a retry (the batch failed or was cancelled) resumes after its committed rows."""
    from crm.tasks.services import TaskFailed

    actor = session.get(User, task.owner_id)
    now = clock.now()
    try:
        batch = session.get(ImportBatch, task.params["batch_id"], populate_existing=True)
        if batch is None or batch.status != "importing":
            batch = begin(session, task.params["batch_id"], actor, now)
        batch = import_rows(session, batch, actor, now, progress)
    except ImportError_ as exc:
        raise TaskFailed(exc.message) from exc
    return {"batch_id": batch.id, "created": batch.rows_created, "duplicates": batch.rows_duplicate,
            "error_rows": batch.rows_error}  # fmt: skip


def task_stopped(session: Session, task) -> None:
    """A preview or import task failed or was cancelled: an importing batch says so (retry resumes)."""
    if task.kind == "import_run":
        status = "cancelled" if task.status == "cancelled" else "failed"
        mark_stopped(session, task.params["batch_id"], status, clock.now())


def task_summary(task) -> str:
    r = task.result
    if task.kind == "import_preview":
        return _("预览完成: 共 %(total)s 行,可导入 %(valid)s 条,错误 %(err)s 行。",
                 total=r.get("total", 0), valid=r.get("valid", 0), err=r.get("error_rows", 0))  # fmt: skip
    return _("导入完成: 新建 %(created)s 条,归入已有客户 %(dup)s 条,错误 %(err)s 行。",
             created=r.get("created", 0), dup=r.get("duplicates", 0), err=r.get("error_rows", 0))  # fmt: skip


def validated_path(batch: ImportBatch) -> Path:
    return storage_dir() / f"validated-{batch.id}.pickle"


def save_validated(batch: ImportBatch, preview: Preview) -> None:
    """Keep the preview task's validated rows for the import task (another process): the import then
    neither reads the spreadsheet nor validates it again. Written by us under the instance folder only."""
    path = validated_path(batch)
    tmp = path.with_suffix(".tmp")
    kept = Preview(headers=preview.headers, total=preview.total, prepared=preview.prepared, errors=preview.errors,
                   error_rows=preview.error_rows)  # fmt: skip
    with open(tmp, "wb") as fh:
        pickle.dump((_mapping_key(batch), batch.file_hash, kept), fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_validated(batch: ImportBatch) -> Preview | None:
    """The preview task's validated rows, if they were made from this file with this mapping."""
    path = validated_path(batch)
    try:
        with open(path, "rb") as fh:
            mapping, file_hash, preview = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError):
        return None
    return preview if (mapping, file_hash) == (_mapping_key(batch), batch.file_hash) else None


def error_file_path(batch: ImportBatch, fmt: str) -> Path:
    return storage_dir() / f"errors-{batch.id}.{fmt}"


def write_error_files(batch: ImportBatch, preview: Preview) -> None:
    """The error file in both formats, written by the task that validated the rows (the download then
    reads no spreadsheet)."""
    for fmt in ("xlsx", "csv"):
        path = error_file_path(batch, fmt)
        if not preview.error_rows:
            path.unlink(missing_ok=True)
            continue
        body = _error_rows(batch, preview.headers, preview.rows, fmt)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)


def error_rows_file(session: Session, batch: ImportBatch, fmt: str) -> bytes:
    """The rows with errors, as uploaded, plus 行号 and 错误原因 — escaped against formula injection."""
    path = error_file_path(batch, fmt)
    if path.exists():
        return path.read_bytes()
    headers, rows = load(batch)
    return _error_rows(batch, headers, rows, fmt)


def _error_rows(batch: ImportBatch, headers: list[str], rows: list[tuple[int, list]], fmt: str) -> bytes:
    reasons: dict[int, list[str]] = {}
    for error in batch.errors or []:
        if error.get("warning"):
            continue
        reasons.setdefault(int(error["row"]), []).append(f"{error['column']}: {error['reason']}")
    out = [[number, *values, ";".join(reasons[number])] for number, values in rows if number in reasons]
    return spreadsheet.write([_("行号"), *headers, _("错误原因")], out, fmt)


def headers_and_samples(batch: ImportBatch) -> tuple[list[str], list[list]]:
    """The file's headers and first rows as kept at upload (older batches: read from the file)."""
    if "headers" in batch.mapping:
        return batch.mapping["headers"], batch.mapping.get("samples") or []
    headers, rows = load(batch)
    return headers, [values for _n, values in rows[:3]]


def step(session: Session, batch: ImportBatch) -> tuple[object, dict | None]:
    """The batch's latest preview or import task, and the preview to show (a finished preview of the
    current mapping) for the batch page."""
    from crm.tasks.services import latest

    task = latest(session, f"import:{batch.id}", ("import_preview", "import_run"))
    preview = None
    done = task is not None and task.kind == "import_preview" and task.status == "done" and task.result
    if done and task.result.get("mapping") == _mapping_key(batch):
        preview = task.result
    return task, preview


def running_tasks(session: Session, batches: list[ImportBatch], now: datetime) -> dict[int, object]:
    """{batch id: its active preview or import task} for the import list's progress bars."""
    from crm.models import Task, TaskStatus
    from crm.tasks.services import refresh

    refs = {f"import:{b.id}": b.id for b in batches}
    if not refs:
        return {}
    found = session.scalars(
        select(Task).where(Task.ref.in_(list(refs)), Task.status.in_(TaskStatus.ACTIVE)).order_by(Task.id)
    ).all()
    return {refs[t.ref]: refresh(session, t, now) for t in found}


def batches_for(session: Session, user: User, limit: int = 30) -> list[ImportBatch]:
    query = select(ImportBatch).order_by(ImportBatch.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(ImportBatch.user_id == user.id)
    return list(session.scalars(query))
