"""Administration screens. Features add their settings pages to ``ADMIN_NAV``."""

from flask_babel import lazy_gettext as _l

# (endpoint, label): the tabs across the top of every admin screen; missing endpoints are hidden.
ADMIN_NAV = [
    ("admin.users", _l("用户")),
    ("admin.teams", _l("团队")),
    ("admin.levels", _l("职级")),
    ("pool.admin_list", _l("公海池")),
]
ADMIN_NAV += [
    ("recycle.index", _l("回收规则")),  # issue 5: recycle rules, holidays, sweep log
    ("recycle.holidays", _l("节假日")),
    ("recycle.runs", _l("回收日志")),
    ("reminders.admin_settings", _l("提醒与跟进")),
    ("reminders.admin_channels", _l("通知渠道")),
    ("reminders.admin_deliveries", _l("发送失败")),
    ("intake.conflicts", _l("查重冲突")),
    ("intake.imports", _l("批量导入")),
    ("intake.forms", _l("线索表单")),
    ("scoring.settings", _l("评分规则")),
    ("scoring.report_page", _l("评分报表")),
    ("pipeline.admin_stages", _l("销售阶段")),
]
# issue 24: 系统状态 (processes, queues, backups); the tab reads 系统 (a msgid that has its English already)
ADMIN_NAV += [("ops.system", _l("系统"))]
