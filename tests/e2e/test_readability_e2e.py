"""Type and tap targets on every rep and manager screen at 390×844 (issue 20): inputs ≥ 16 px, no text under
12 px, meta text (.small, .muted, .meta, .hint, badges' captions) ≥ 13 px, every visible tappable element at
least 44×44 CSS px (a checkbox or radio counts by its label; a link inside running text is exempt, as in
WCAG 2.5.8, only when it sits in a sentence of a paragraph). Fails on a regression, listing each offender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm import clock
from crm.extensions import db
from crm.followups.services import record_followup  # noqa: F401  (registers the follow-up panels)
from crm.models import RuleKind, SpotCheck
from crm.recycle import services as recycle
from crm.reminders.dispatch import fan_out
from tests.recycle_support import add_rule

SH = clock.zone("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 10, 0, tzinfo=SH).astimezone(UTC)

MEASURE = """() => {
  const out = [];
  const seen = new Set();
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
  const visible = (el) => el.checkVisibility ? el.checkVisibility({visibilityProperty: true}) : !!el.offsetParent;
  const renderedSize = (el) => {
    let fs = parseFloat(getComputedStyle(el).fontSize);
    const svg = el.closest('svg');
    if (svg && svg.viewBox && svg.viewBox.baseVal && svg.viewBox.baseVal.width) {
      fs = fs * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    }
    return fs;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || !visible(el) || el.closest('.sr-only, .hp, option, script, style')) continue;
    const fs = renderedSize(el);
    const meta = el.closest('.small, .muted, .meta, .hint, .when, .label');
    const limit = meta ? 13 : 12;
    if (fs < limit - 0.01) {
      const key = 'text ' + name(el) + ' ' + fs.toFixed(2);
      if (!seen.has(key)) { seen.add(key); out.push(key + 'px "' + text.slice(0, 20) + '"'); }
    }
  }
  document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]):not([type=radio]), select, textarea').forEach((el) => {
    if (!visible(el)) return;
    const fs = parseFloat(getComputedStyle(el).fontSize);
    if (fs < 16) out.push('input ' + name(el) + ' ' + fs + 'px');
  });
  const tappable = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [role=button]';
  document.querySelectorAll(tappable).forEach((el) => {
    if (!visible(el) || el.closest('.sr-only, .hp')) return;
    let box = el;
    if (el.matches('input[type=checkbox], input[type=radio]')) {
      box = el.closest('label') || (el.id && document.querySelector('label[for="' + el.id + '"]')) || el;
    }
    const r = box.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    if (el.matches('a') && el.closest('p') && getComputedStyle(el).display === 'inline') return;  // inline in a sentence
    if (r.width < 43.5 || r.height < 43.5) {
      const key = 'tap ' + name(box) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height);
      if (!seen.has(key)) { seen.add(key); out.push(key + ' "' + (box.textContent || box.value || '').trim().slice(0, 20) + '"'); }
    }
  });
  return out;
}"""


@pytest.fixture
def frozen():
    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def world(make, rep, manager, frozen):
    pool = make.pool("新线索池", members=[rep], admins=[manager])
    add_rule(pool, RuleKind.NO_FOLLOWUP, days=7, warn_days=2)
    owned = [
        make.customer(
            pool,
            owner=rep,
            name=n,
            claimed_at=NOW - timedelta(days=d),
            contact_name="王总",
            phone=f"1380013800{i}",
            wechat=f"wx_{i}",
            grade=g,
        )  # fmt: skip
        for i, (n, d, g) in enumerate(
            (
                ("杭州星河科技有限公司", 6, "A"),
                ("苏州博远电子有限公司", 2, "B"),
                ("上海云启软件有限公司", 9, "C"),
            )
        )  # fmt: skip
    ]
    for i in range(3):
        make.customer(pool, name=f"公海客户{i}有限公司", phone=f"1391111000{i}")
    make.reminder(rep, customer=owned[0], kind="next_contact", title="联系 杭州星河: 发报价单",
                  due_at=NOW + timedelta(hours=3))  # fmt: skip
    make.reminder(rep, customer=owned[1], kind="custom", title="确认合同", due_at=NOW - timedelta(days=1))
    fu = make.followup(owned[1], rep)
    db.session.add(
        SpotCheck(followup_id=fu.id, manager_id=manager.id, sampled_on=fu.at.date(), verdict="pending")
    )
    req = recycle.request_extension(db.session, owned[0].id, rep, 5, "客户出差", NOW)
    db.session.commit()
    fan_out(db.session, NOW + timedelta(minutes=1))
    db.session.commit()
    return {"pool": pool, "owned": owned, "request": req}


def _screens(world, role):
    pool, c = world["pool"], world["owned"][0]
    rep_screens = ["/", "/pools", f"/pools/{pool.id}", "/customers", f"/customers/{c.id}", "/leads/new",
                   "/pipeline", "/reminders", "/reminders/new", "/notifications", "/profile",
                   f"/customers/{c.id}/followup"]  # fmt: skip
    if role == "rep":
        return rep_screens
    return rep_screens + ["/approvals/", f"/recycle/extension-requests/{world['request'].id}", "/reports/",
                          "/spot-checks", "/intake/conflicts", "/inbox/team",
                          f"/recycle/pools/{pool.id}/rules"]  # fmt: skip


@pytest.mark.parametrize("role", ["rep", "manager"])
def test_every_screen_has_readable_type_and_big_enough_tap_targets(
    page, live_server, login_as, world, rep, manager, role, screenshot
):
    login_as(page, rep if role == "rep" else manager)
    problems = []
    for path in _screens(world, role):
        resp = page.goto(f"{live_server}{path}")
        assert resp.status < 400, path
        page.wait_for_load_state("networkidle")
        problems += [f"{path}: {p}" for p in page.evaluate(MEASURE)]
        slug = path.strip("/").replace("/", "-") or "home"
        screenshot(page, f"type-{role}-{slug}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
