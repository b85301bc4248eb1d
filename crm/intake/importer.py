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

import hashlib
import re
import shutil
import unicodedata
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
        headers, rows = spreadsheet.read(source_path, kind)
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
    while len(_PARSED) >= _PARSED_KEEP:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[file_hash] = (headers, rows)  # the preview that follows needs no second parse
    batch = ImportBatch(
        user_id=user.id, pool_id=pool.id, filename=(filename or "import")[:200], file_hash=file_hash,
        mapping={"kind": kind, "columns": guess_mapping(headers), "channel": channel.strip(),
                 "campaign": campaign.strip()},
        status="preview", rows_total=len(rows), created_at=now,
    )  # fmt: skip
    session.add(batch)
    session.commit()
    return batch


_PARSED: dict[str, tuple[list[str], list[tuple[int, list]]]] = {}
_PARSED_KEEP = 2


def load(batch: ImportBatch) -> tuple[list[str], list[tuple[int, list]]]:
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
        parsed = spreadsheet.read(path, batch.mapping.get("kind", "xlsx"))
    except spreadsheet.SpreadsheetError as exc:
        raise ImportError_(exc.code, exc.message) from exc
    while len(_PARSED) >= _PARSED_KEEP:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[batch.file_hash] = parsed
    return parsed[0], list(parsed[1])


def set_mapping(session: Session, batch: ImportBatch, columns: dict[str, str]) -> None:
    """Save the column → field choice ("" = ignore the column); a field may be chosen once. Commits."""
    clean: dict[str, str] = {}
    seen: dict[str, str] = {}
    known = {name for name, _l_, _s in FIELDS}
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
    duplicates: list[dict] = field(default_factory=list)  # {"row", "customer", "matched_on", "owned"}
    samples: list[dict] = field(default_factory=list)

    @property
    def new_count(self) -> int:
        return len(self.prepared) - len(self.duplicates)


def build(session: Session, batch: ImportBatch, *, check_existing: bool = True) -> Preview:
    """Read the file with the batch's mapping and validate every row (no writes)."""
    headers, rows = load(batch)
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
    for number, values in rows:
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
        headers=headers, total=len(rows), prepared=prepared, errors=errors, error_rows=error_rows
    )
    if check_existing and prepared:
        matches = exact_matches(session, [p.keys for p in prepared])
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
    while len(_PREVIEWS) >= _PARSED_KEEP:
        _PREVIEWS.pop(next(iter(_PREVIEWS)))
    _PREVIEWS[_preview_key(batch)] = (_mapping_key(batch), preview)
    batch.rows_total = preview.total
    batch.rows_error = len(preview.error_rows)
    batch.rows_duplicate = len(preview.duplicates)
    batch.errors = preview.errors
    session.commit()


def run(session: Session, batch_id: int, actor: User, now: datetime) -> ImportBatch:
    """Import the good rows of a previewed batch (see the module docstring). Commits."""
    batch = session.get(ImportBatch, batch_id, populate_existing=True)
    if batch is None:
        raise ImportError_("not_found", _("导入批次不存在。"))
    if batch.user_id != actor.id and not actor.is_admin:
        raise ImportError_("forbidden", _("只能导入自己上传的文件。"))
    pool = session.get(Pool, batch.pool_id)
    if pool is None or not is_pool_admin(session, actor, pool):
        raise ImportError_("forbidden", _("你不是该公海池的管理员。"))
    allowed = ImportBatch.status.in_(("preview", "failed")) | (
        (ImportBatch.status == "importing") & (ImportBatch.created_at < now - STALE_IMPORT)
    )
    started = session.execute(
        update(ImportBatch).where(ImportBatch.id == batch.id, allowed).values(status="importing")
    ).rowcount
    session.commit()
    if started != 1:
        session.refresh(batch)
        if batch.status == "imported":
            raise ImportError_("already_imported", _("该批次已导入,不会重复导入。"))
        raise ImportError_("busy", _("该批次正在导入中,请稍候刷新。"))
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
            preview = build(session, batch, check_existing=False)
        batch.rows_total = preview.total
        batch.rows_error = len(preview.error_rows)
        batch.errors = preview.errors
        intake(
            session, [p.data for p in preview.prepared], source="import", now=now, pool=pool, actor=actor,
            batch=batch, prepared=preview.prepared,
        )  # fmt: skip
    except Exception as exc:
        session.rollback()
        session.execute(
            update(ImportBatch).where(ImportBatch.id == batch.id).values(status="failed", finished_at=now)
        )
        session.commit()
        if isinstance(exc, ImportError_):
            raise
        raise ImportError_("failed", _("导入失败,未导入任何数据: %(err)s", err=str(exc)[:200])) from exc
    session.refresh(batch)
    return batch


def error_rows_file(session: Session, batch: ImportBatch, fmt: str) -> bytes:
    """The rows with errors, as uploaded, plus 行号 and 错误原因 — escaped against formula injection."""
    headers, rows = load(batch)
    reasons: dict[int, list[str]] = {}
    for error in batch.errors or []:
        if error.get("warning"):
            continue
        reasons.setdefault(int(error["row"]), []).append(f"{error['column']}: {error['reason']}")
    out = [[number, *values, ";".join(reasons[number])] for number, values in rows if number in reasons]
    return spreadsheet.write([_("行号"), *headers, _("错误原因")], out, fmt)


def batches_for(session: Session, user: User, limit: int = 30) -> list[ImportBatch]:
    query = select(ImportBatch).order_by(ImportBatch.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(ImportBatch.user_id == user.id)
    return list(session.scalars(query))
