"""Intake screens: 新建 (manual entry with live duplicate warnings), Excel/CSV import, the conflict queue,
lead-form administration, and the public web forms at /f/<slug>. Thin: parse → service → render."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.exceptions import RequestEntityTooLarge

from crm import clock
from crm.access import access
from crm.customers.views import MERGED_INTO, merged_redirect
from crm.extensions import csrf, db
from crm.forms import choices
from crm.htmx import is_htmx, redirect_htmx, render, render_fragment, toast
from crm.intake import importer, merge, public, stats
from crm.intake.dedupe import Keys, exact_matches, fuzzy_matches
from crm.intake.forms import (
    JOB_LEVELS,
    OPTIONAL_FORM_FIELDS,
    LeadFormAdminForm,
    ManualLeadForm,
    PublicLeadForm,
    UploadForm,
    apply_errors,
)
from crm.intake.services import IntakeError, LeadData, intake, lead_pool, prepare
from crm.models import Customer, DuplicateConflict, EventKind, ImportBatch, LeadForm, Pool, Role, User
from crm.permissions import is_pool_admin, is_pool_member, visible_pool_ids
from crm.pool.services import PoolRefusal, claim, record_event
from crm.scoring import panels  # noqa: F401  (registers the score panel, JSON and signal receivers)
from crm.web import client_ip

bp = Blueprint("intake", __name__)

CUSTOMER_ENDPOINTS = ("customers.detail", "customers.show", "customers.view")
INDUSTRIES = ["制造业", "互联网", "教育", "医疗", "零售", "物流", "金融", "餐饮"]
REGIONS = ["华东", "华南", "华北", "华中", "西南", "西北", "东北"]
CHANNELS = ["官网表单", "公众号", "百度推广", "展会", "老客户转介绍", "电话开发", "抖音投放"]


def customer_url(customer_id: int) -> str | None:
    """The customer page, once the customers feature provides it (else None)."""
    for endpoint in CUSTOMER_ENDPOINTS:
        if endpoint in current_app.view_functions:
            return url_for(endpoint, customer_id=customer_id)
    return None


@bp.before_app_request
def _redirect_merged_customer():
    """A merged customer's page and API id lead to the winner (any route with ``customer_id``, except
    views marked ``checks_merged`` that read ``merged_into_id`` anyway and answer ``merged_redirect``)."""
    args = request.view_args or {}
    customer_id = args.get("customer_id")
    if not isinstance(customer_id, int) or request.endpoint is None:
        return None
    if getattr(current_app.view_functions.get(request.endpoint), "checks_merged", False):
        return None
    winner = db.session.scalar(MERGED_INTO, {"cid": customer_id})
    if winner is None:
        return None
    return merged_redirect(customer_id, winner)


# ---------------------------------------------------------------- 新建 (manual entry)


def _pool_choices(user: User) -> list[tuple[int, str]]:
    pools = list(
        db.session.scalars(
            select(Pool)
            .where(Pool.id.in_(visible_pool_ids(db.session, user)), Pool.enabled.is_(True))
            .order_by(Pool.id)
        )
    )
    default = lead_pool(db.session, clock.now())
    if default not in pools:
        pools.insert(0, default)
    else:
        pools.insert(0, pools.pop(pools.index(default)))
    db.session.commit()  # a fresh install gets its lead pool here
    return [(p.id, p.name) for p in pools]


def _lead_form() -> ManualLeadForm:
    form = ManualLeadForm()
    form.pool_id.choices = choices(_pool_choices(current_user))
    if form.pool_id.data is None:  # not chosen: the default lead pool
        form.pool_id.data = form.pool_id.choices[0].value
    return form


def _new_context(form: ManualLeadForm, **extra) -> dict:
    return {
        "form": form,
        "job_levels": JOB_LEVELS,
        "industries": INDUSTRIES,
        "regions": REGIONS,
        "channels": CHANNELS,
        "can_import": current_user.has_role(Role.MANAGER),
        "can_forms": current_user.is_admin,
        **extra,
    }


@bp.route("/leads/new", methods=["GET", "POST"])
@access(Role.REP)
def new():
    """新建: enter a lead by hand; duplicates are flagged as you type and routed on save (撞单)."""
    form = _lead_form()
    if form.is_submitted():
        valid = form.validate()
        data = LeadData.from_dict(form.lead_dict())
        p = prepare(data)
        apply_errors(form, p.errors)  # every problem at once, with the form's own
        force = request.form.get("force") == "1" and current_user.is_admin
        duplicate = _blocking_duplicate(data, p) if valid and not p.errors and not force else None
        if duplicate:
            return render(
                "intake/new.html", "lead_form", status=422, **_new_context(form, duplicate=duplicate)
            )
        if valid and not p.errors:
            now = clock.now()
            pool = db.session.get(Pool, form.pool_id.data) if form.pool_id.data else None
            try:
                (outcome,) = intake(db.session, [data], source="manual", now=now, pool=pool, actor=current_user,
                                    route=not form.take.data, prepared=[p])  # fmt: skip
            except IntakeError as exc:
                form.pool_id.errors = [exc.message]
            else:
                if force:  # an admin overrode the duplicate block: say so in the ledger
                    record_event(db.session, outcome.customer_id, EventKind.DUPLICATE, now, actor=current_user,
                                 reason=_("管理员确认疑似重复后仍然创建"), result=outcome.status)  # fmt: skip
                    db.session.commit()
                return _after_manual(outcome, form.take.data, now)
    status = 422 if request.method == "POST" else 200
    return render("intake/new.html", "lead_form", status=status, **_new_context(form))


def _after_manual(outcome, take: bool, now):
    customer = db.session.get(Customer, outcome.customer_id)
    if outcome.status == "duplicate":
        owner = db.session.get(User, outcome.owner_id) if outcome.owner_id else None
        if owner is not None and owner.id == current_user.id:
            flash(_("「%(name)s」已经是你的客户,这条线索已记录到其时间线。", name=customer.name), "warning")
        elif owner is not None:
            flash(_("「%(name)s」已由 %(owner)s 负责 (撞单),已记录到其时间线并通知负责人。",
                    name=customer.name, owner=owner.name), "warning")  # fmt: skip
        else:
            flash(_("「%(name)s」已在公海中,已合并记录并刷新其到达时间。", name=customer.name), "warning")
        return redirect_htmx(customer_url(customer.id) or url_for("intake.new"))
    message = _("已创建线索「%(name)s」,评分 %(score)s (%(grade)s 级)。", name=customer.name,
                score=outcome.score, grade=outcome.grade)  # fmt: skip
    if take:
        try:
            claim(db.session, customer.id, current_user, now)
            message += " " + _("已由你负责跟进。")
        except PoolRefusal as exc:
            message += " " + _("未能领取: %(reason)s", reason=exc.message)
    elif outcome.assigned_to:
        owner = db.session.get(User, outcome.assigned_to)
        message += " " + _("已按评分自动分配给 %(name)s。", name=owner.name)
    else:
        message += " " + _("已放入「%(pool)s」。", pool=customer.pool.name)
    if outcome.conflicts:
        message += " " + _("与已有客户名称相似,已提交查重队列。")
    flash(message, "success")
    return redirect_htmx(customer_url(customer.id) or url_for("intake.new"))


BLOCKING_SIMILARITY = 95


def _duplicates(data: LeadData, p) -> tuple:
    """(exact match on phone / email / WeChat or None, its owner, [(similar customer, score)…])."""
    keys = Keys(name_key=p.keys.name_key, phone_key=p.keys.phone_key, email_key=p.keys.email_key,
                wechat_key=p.keys.wechat_key)  # fmt: skip
    exact = None
    if keys.phone_key or keys.email_key or keys.wechat_key:
        exact = exact_matches(db.session, [keys])[0]
    similar = []
    if data.name.strip() and len(keys.name_key) >= 2:
        from crm.intake import config

        threshold = config.get(db.session)["fuzzy_threshold"]
        found = fuzzy_matches(db.session, [keys.name_key], threshold, limit=3)[0]
        if found:
            rows = {
                c.id: c
                for c in db.session.scalars(
                    select(Customer).where(Customer.id.in_([cid for cid, _s in found]))
                )
            }
            similar = [
                (rows[cid], score)
                for cid, score in found
                if cid in rows and (not exact or cid != exact.customer_id)
            ]
    owner = db.session.get(User, exact.owner_id) if exact and exact.owner_id else None
    return exact, owner, similar


def _blocking_duplicate(data: LeadData, p) -> dict | None:
    """An exact duplicate (same phone / email / WeChat, or a name ≥ 95 % similar) stops 新建: the form comes
    back offering 领取已有 / 查看 (and 仍然创建 to admins). None when nothing that close exists."""
    exact, owner, similar = _duplicates(data, p)
    target = None
    if exact:
        target = db.session.get(Customer, exact.customer_id)
    else:
        close = [(c, score) for c, score in similar if score >= BLOCKING_SIMILARITY]
        target = close[0][0] if close else None
    if target is None or target.merged_into_id is not None:
        return None
    pool = target.pool
    can_claim = (
        target.owner_id is None and pool is not None and is_pool_member(db.session, current_user, pool)
    )
    return {"customer": target, "exact": exact, "owner": target.owner, "url": customer_url(target.id),
            "can_claim": can_claim, "score": None if exact else close[0][1]}  # fmt: skip


@bp.route("/leads/check", methods=["POST"])
@access(Role.REP)
def check():
    """As-you-type duplicate warning: exact matches on phone/email/WeChat, similar company names."""
    data = LeadData.from_dict(
        {k: request.form.get(k, "") for k in ("name", "contact_name", "phone", "email", "wechat")}
    )
    p = prepare(data)
    exact, owner, similar = _duplicates(data, p)
    field_errors = [
        e for e in p.errors if e.field in ("phone", "email", "wechat") and request.form.get(e.field)
    ]
    return render_fragment(
        "intake/new.html", "dup_check", exact=exact, owner=owner, similar=similar, field_errors=field_errors,
        customer_url=customer_url,
    )  # fmt: skip


# ---------------------------------------------------------------- import


def _admin_pools() -> list[tuple[int, str]]:
    pools = db.session.scalars(
        select(Pool).where(Pool.deleted_at.is_(None), Pool.enabled.is_(True)).order_by(Pool.id)
    )
    return [(p.id, p.name) for p in pools if is_pool_admin(db.session, current_user, p)]


@bp.route("/intake/imports", methods=["GET", "POST"])
@access(Role.MANAGER)
def imports():
    """批量导入: upload an Excel/CSV file into a pool you administer; earlier batches below."""
    try:
        form = UploadForm()
    except RequestEntityTooLarge:
        return _too_large()
    form.pool_id.choices = choices(_admin_pools() or [(None, _("— 你不是任何公海池的管理员 —"))])
    error = None
    if request.method == "POST":
        try:
            upload = request.files.get("file")
        except RequestEntityTooLarge:
            return _too_large()
        if form.validate_on_submit():
            if upload is None or not upload.filename:
                form.file.errors = [_("请选择要导入的文件。")]
            else:
                pool = db.session.get(Pool, form.pool_id.data) if form.pool_id.data else None
                if pool is None:
                    form.pool_id.errors = [_("请选择公海池。")]
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        path = Path(tmp) / "upload"
                        upload.save(path)
                        try:
                            batch = importer.create_batch(
                                db.session, current_user, pool, path, upload.filename, clock.now(),
                                channel=form.channel.data or "", campaign=form.campaign.data or "",
                            )  # fmt: skip
                        except importer.ImportError_ as exc:
                            db.session.rollback()
                            error = exc.message
                        else:
                            return redirect_htmx(url_for("intake.import_batch", batch_id=batch.id))
    status = 422 if request.method == "POST" else 200
    now = clock.now()
    importer.mark_stuck(db.session, now)
    batches = importer.batches_for(db.session, current_user)
    return render(
        "intake/imports.html", "upload_form", status=status, form=form, error=error, batches=batches,
        running=importer.running_tasks(db.session, batches, now),
    )  # fmt: skip


@bp.app_errorhandler(RequestEntityTooLarge)
def _too_large(exc=None):
    """Uploads over MAX_CONTENT_LENGTH: say what the limit is (the body is refused before any view runs)."""
    from crm.errors import error_response

    limit = current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
    return error_response(
        413, _("上传的内容超过 %(n)s MB 上限。导入文件请拆分后分批上传。", n=limit), "too_large"
    )


def _batch_or_404(batch_id: int) -> ImportBatch:
    batch = db.session.get(ImportBatch, batch_id)
    if batch is None:
        abort(404)
    if batch.user_id != current_user.id and not current_user.is_admin:
        abort(403)
    return batch


@bp.route("/intake/imports/<int:batch_id>", methods=["GET", "POST"])
@access(Role.MANAGER)
def import_batch(batch_id: int):
    """One batch: map columns (guessed from the headers), preview per-row errors (a background task for a
    big file, with a live progress bar), then import; or its progress and result."""
    batch = _batch_or_404(batch_id)
    error = None
    headers: list[str] = []
    samples: list[list] = []
    try:
        headers, samples = importer.headers_and_samples(batch)
        if request.method == "POST" and batch.status in ("preview", "failed", "cancelled"):
            columns = {str(i): request.form.get(f"col-{i}", "") for i in range(len(headers))}
            importer.set_mapping(db.session, batch, columns)
            importer.start_preview(db.session, batch, current_user, clock.now())
    except importer.ImportError_ as exc:
        db.session.rollback()
        error = exc.message
    status = 422 if error and request.method == "POST" else 200
    return _batch_page(batch, headers, samples, error, status)


def _batch_page(batch: ImportBatch, headers: list[str], samples: list[list], error: str | None, status: int):
    from crm.tasks import services as tasks

    task, preview = importer.step(db.session, batch)
    if task is not None:
        task = tasks.refresh(db.session, task, clock.now())
    return render(
        "intake/import_batch.html", "import_step", status=status, batch=batch, pool=db.session.get(Pool, batch.pool_id),
        headers=headers, samples=samples, preview=preview, task=task, error=error, fields=importer.FIELDS,
        columns=batch.mapping.get("columns", {}), errors=(batch.errors or [])[:100],
    )  # fmt: skip


@bp.route("/intake/imports/<int:batch_id>/run", methods=["POST"])
@access(Role.MANAGER)
def import_run(batch_id: int):
    """Import the good rows of a previewed batch: a background task (a small file is imported at once);
    the batch page shows its progress."""
    batch = _batch_or_404(batch_id)
    try:
        task = importer.start_import(db.session, batch.id, current_user, clock.now())
    except importer.ImportError_ as exc:
        flash(exc.message, "error")
    else:
        from crm.tasks import services as tasks

        if task.status == "done":
            flash(tasks.summary(task), "success")
        elif task.status == "failed":
            flash(task.error or _("导入失败。"), "error")
    return redirect_htmx(url_for("intake.import_batch", batch_id=batch_id))


@bp.route("/intake/imports/<int:batch_id>/errors.<fmt>")
@access(Role.MANAGER)
def import_errors(batch_id: int, fmt: str):
    """The rows with errors as a spreadsheet (xlsx or csv), formula-escaped, to fix and import again."""
    if fmt not in ("xlsx", "csv"):
        abort(404)
    batch = _batch_or_404(batch_id)
    try:
        body = importer.error_rows_file(db.session, batch, fmt)
    except importer.ImportError_ as exc:
        abort(410, exc.message)
    mimetype = (
        "text/csv; charset=utf-8"
        if fmt == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    response = current_app.response_class(body, mimetype=mimetype)
    stem = Path(batch.filename).stem or "import"
    from urllib.parse import quote

    response.headers["Content-Disposition"] = (
        f"attachment; filename=errors-{batch.id}.{fmt}; filename*=UTF-8''{quote(stem)}-errors.{fmt}"
    )
    return response


# ---------------------------------------------------------------- conflict queue


@bp.route("/intake/conflicts")
@access(Role.MANAGER)
def conflicts():
    """查重冲突: possible duplicates to merge or mark distinct, with the conflict rate. Managers see the pairs
    between customers of their own team (``merge.conflict_scope``)."""
    state = request.args.get("state", "open")
    if state not in ("open", "resolved"):
        state = "open"
    scope = merge.conflict_scope(db.session, current_user)
    items = merge.list_conflicts(db.session, state, scope=scope)
    count = select(func.count()).select_from(DuplicateConflict).where(DuplicateConflict.status == "open")
    if scope is not None:
        count = count.where(scope)
    ids = {c.customer_id for c in items} | {c.candidate_id for c in items}
    owners = {}
    if ids:
        owners = dict(
            db.session.execute(
                select(Customer.id, User.name)
                .join(User, User.id == Customer.owner_id)
                .where(Customer.id.in_(ids))
            ).all()
        )
    rate = stats.conflict_rate(db.session, clock.now()) if current_user.is_admin else None
    return render(
        "intake/conflicts.html", "conflict_list", items=items, owners=owners, state=state,
        open_count=db.session.scalar(count), rate=rate, customer_url=customer_url,
    )  # fmt: skip


def _conflict_or_404(conflict_id: int) -> DuplicateConflict:
    conflict = db.session.get(DuplicateConflict, conflict_id)
    if conflict is None:
        abort(404)
    # A settled pair's owners changed with the merge; the service answers "already handled" then.
    pair = (conflict.customer_id, conflict.candidate_id)
    if conflict.status == "open" and not merge.may_resolve(db.session, current_user, pair):
        abort(403)
    return conflict


@bp.route("/intake/conflicts/<int:conflict_id>/merge", methods=["GET", "POST"])
@access(Role.MANAGER)
def conflict_merge(conflict_id: int):
    """GET: the merge sheet, both records side by side. POST: merge the pair; ``keep`` says which record
    survives (``candidate`` = the older one, default). htmx gets the refreshed queue and the sheet closes."""
    conflict = _conflict_or_404(conflict_id)
    if request.method == "GET":
        return render("intake/merge.html", "merge_sheet", c=conflict, owners=_owner_names(conflict),
                      customer_url=customer_url)  # fmt: skip
    keep_new = request.form.get("keep") == "customer"
    winner, loser = (
        (conflict.customer_id, conflict.candidate_id)
        if keep_new
        else (conflict.candidate_id, conflict.customer_id)
    )
    try:
        customer = merge.merge(db.session, winner, loser, current_user, clock.now(), conflict_id=conflict.id)
    except merge.MergeError as exc:
        message, level = exc.message, "error"
    else:
        message, level = _("已合并到「%(name)s」,所有记录都已保留。", name=customer.name), "success"
    if not is_htmx():
        flash(message, level)
        return redirect_htmx(url_for("intake.conflicts"))
    response = conflicts()
    response.set_data(response.get_data() + b'<div id="sheet" hx-swap-oob="true" aria-live="polite"></div>')
    return toast(response, message, level)


def _owner_names(conflict: DuplicateConflict) -> dict[int, str]:
    return dict(
        db.session.execute(
            select(Customer.id, User.name)
            .join(User, User.id == Customer.owner_id)
            .where(Customer.id.in_([conflict.customer_id, conflict.candidate_id]))
        ).all()
    )


@bp.route("/intake/conflicts/<int:conflict_id>/distinct", methods=["POST"])
@access(Role.MANAGER)
def conflict_distinct(conflict_id: int):
    """Not a duplicate: this pair is never flagged again."""
    _conflict_or_404(conflict_id)
    try:
        merge.mark_distinct(db.session, conflict_id, current_user, clock.now())
    except merge.MergeError as exc:
        flash(exc.message, "error")
    else:
        flash(_("已标记为不同客户,这两条记录不会再被提示。"), "success")
    return redirect_htmx(url_for("intake.conflicts"))


# ---------------------------------------------------------------- lead forms (admin)


def _form_admin(form_obj: LeadForm | None) -> LeadFormAdminForm:
    form = LeadFormAdminForm(obj=form_obj)
    form.pool_id.choices = choices(_admin_pools())
    if request.method == "GET":
        if form_obj is None:
            form.slug.data = public.suggest_slug(db.session)
            form.thank_you.data = _("感谢您的留言,我们会尽快与您联系。")
            form.fields.data = ["name", "email", "notes"]
            lead = lead_pool(db.session, clock.now())
            form.pool_id.data = lead.id
            db.session.commit()
        else:
            form.fields.data = list(form_obj.fields or [])
    return form


def _save_lead_form(form_obj: LeadForm | None, form: LeadFormAdminForm):
    try:
        saved = public.save_form(db.session, form_obj, form.data, current_user, clock.now())
    except public.FormError as exc:
        db.session.rollback()
        getattr(form, exc.field).errors = [exc.message]
        return None
    db.session.commit()
    return saved


def _forms_page(form: LeadFormAdminForm, editing: LeadForm | None, status: int = 200):
    rows = list(db.session.scalars(select(LeadForm).order_by(LeadForm.id.desc())))
    counts = dict(
        db.session.execute(
            select(Customer.campaign, func.count())
            .where(Customer.source == "form")
            .group_by(Customer.campaign)
        ).all()
    )
    snippet = None
    if editing is not None:
        snippet = public.embed_snippet(
            editing, url_for("intake.public_form", slug=editing.slug, _external=True)
        )
    return render(
        "intake/forms.html", "lead_form_editor", status=status, form=form, editing=editing, rows=rows,
        counts=counts, optional_fields=OPTIONAL_FORM_FIELDS, embed_snippet=snippet,
    )  # fmt: skip


@bp.route("/intake/forms", methods=["GET", "POST"])
@access(Role.ADMIN)
def forms():
    """线索表单: embeddable public forms per pool/campaign, with their embed snippets."""
    form = _form_admin(None)
    if form.validate_on_submit():
        saved = _save_lead_form(None, form)
        if saved is not None:
            flash(_("已创建表单「%(name)s」,复制下方代码嵌入网站即可。", name=saved.name), "success")
            return redirect_htmx(url_for("intake.edit_form", form_id=saved.id))
    return _forms_page(form, None, 422 if request.method == "POST" else 200)


@bp.route("/intake/forms/<int:form_id>", methods=["GET", "POST"])
@access(Role.ADMIN)
def edit_form(form_id: int):
    """Edit a lead form; the embed snippet is shown beside it."""
    form_obj = db.session.get(LeadForm, form_id)
    if form_obj is None:
        abort(404)
    form = _form_admin(form_obj)
    if form.validate_on_submit():
        saved = _save_lead_form(form_obj, form)
        if saved is not None:
            flash(_("已保存表单。"), "success")
            return redirect_htmx(url_for("intake.edit_form", form_id=saved.id))
    return _forms_page(form, form_obj, 422 if request.method == "POST" else 200)


# ---------------------------------------------------------------- public forms


def _public_form_or_404(slug: str) -> LeadForm:
    form_obj = db.session.scalar(select(LeadForm).where(LeadForm.slug == slug))
    if form_obj is None or not form_obj.enabled:
        abort(404, _("表单不存在或已停用。"))
    return form_obj


@bp.route("/f/<slug>", methods=["GET", "POST"])
@access(None)
@csrf.exempt
def public_form(slug: str):
    """A public, embeddable lead form (see ``crm.intake.public`` for the token, honeypot and rate limit)."""
    form_obj = _public_form_or_404(slug)
    form = PublicLeadForm()
    now = clock.now()
    notice = None
    status = 200
    if request.method == "GET":
        for key in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"):
            getattr(form, key).data = request.args.get(key, "")[:200]
    else:
        address = client_ip()
        if public.rate_limited(db.session, address, now):
            public.note_hit(db.session, address, now, "rate_limited")
            return render("intake/public_form.html", status=429, form_obj=form_obj, form=form, limited=True,
                          token=public.form_token(form_obj, now))  # fmt: skip
        if (form.website.data or "").strip():
            public.note_hit(db.session, address, now, "honeypot")
            return redirect(url_for("intake.public_thanks", slug=slug), 303)
        problem = public.check_token(form_obj, form.token.data, now)
        if problem is None and not public.spend_token(db.session, form_obj, form.token.data, now):
            problem = "used"
        if problem is not None:
            public.note_hit(db.session, address, now, f"token:{problem}")
            notice = {
                "too_fast": _("提交得太快了,请确认信息后再提交一次。"),
                "used": _("这份表单已经提交过了,请勿重复提交。如需再留言,请确认信息后重新提交。"),
            }.get(problem, _("页面已过期,请确认信息后重新提交。"))
            status = 409 if problem == "used" else 422
        elif form.validate():
            data = LeadData.from_dict(
                {
                    "contact_name": form.contact_name.data,
                    "phone": form.phone.data,
                    **{
                        f: getattr(form, f).data or ""
                        for f, _label in OPTIONAL_FORM_FIELDS
                        if f in (form_obj.fields or [])
                    },
                    "channel": form_obj.channel or _("网页表单"),
                    "campaign": form_obj.campaign or "",
                    **{
                        k: getattr(form, k).data
                        for k in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
                    },  # fmt: skip
                }
            )
            p = prepare(data)
            if p.errors:
                apply_errors(form, p.errors)
                status = 422
            else:
                try:
                    intake(db.session, [data], source="form", now=now, pool=form_obj.pool, prepared=[p])
                except IntakeError as exc:
                    abort(503, exc.message)
                return redirect(url_for("intake.public_thanks", slug=slug), 303)
        else:
            status = 422
    return render("intake/public_form.html", status=status, form_obj=form_obj, form=form, notice=notice,
                  token=public.form_token(form_obj, now), limited=False)  # fmt: skip


@bp.route("/f/<slug>/thanks")
@access(None)
def public_thanks(slug: str):
    """The thank-you page after a public form submission."""
    form_obj = _public_form_or_404(slug)
    return render("intake/public_thanks.html", form_obj=form_obj)
