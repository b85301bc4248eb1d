"""``seed-demo``: realistic Chinese demo data — 3 pools, 8 users across levels, teams and roles, a few
hundred customers with follow-ups and pool history spread over the past 90 days.

Deterministic for a given seed. Features extend it through ``EXTRA_SEEDERS`` (opportunities, reminders…).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.auth.services import create_user
from crm.bootstrap import ensure_defaults
from crm.models import (
    AssignStrategy,
    Channel,
    Customer,
    EventKind,
    FollowUp,
    Level,
    Lifecycle,
    Pool,
    PoolAdmin,
    PoolMember,
    PrevOwnerRule,
    Role,
    Stage,
    Team,
    User,
)
from crm.pool.services import record_event


class DemoError(RuntimeError):
    pass


# Features append callables (session, rng, now, context) run after the base data exists.
EXTRA_SEEDERS: list[Callable[[Session, random.Random, datetime, dict], None]] = []

USERS = [
    # email, name, role, level, team
    ("admin@demo.cn", "周敏", Role.ADMIN, "销售主管", None),
    ("wang.manager@demo.cn", "王强", Role.MANAGER, "销售主管", "华东一组"),
    ("li.manager@demo.cn", "李娜", Role.MANAGER, "销售主管", "华南一组"),
    ("zhang.wei@demo.cn", "张伟", Role.REP, "高级销售", "华东一组"),
    ("liu.yang@demo.cn", "刘洋", Role.REP, "初级销售", "华东一组"),
    ("chen.jing@demo.cn", "陈静", Role.REP, "高级销售", "华南一组"),
    ("yang.fan@demo.cn", "杨帆", Role.REP, "初级销售", "华南一组"),
    ("zhao.lei@demo.cn", "赵磊", Role.REP, "初级销售", "华东一组"),
]

COMPANY_PREFIX = [
    "上海",
    "杭州",
    "苏州",
    "南京",
    "宁波",
    "广州",
    "深圳",
    "东莞",
    "佛山",
    "厦门",
    "北京",
    "成都",
    "武汉",
]
COMPANY_CORE = ["星河", "云启", "华拓", "蓝海", "智联", "恒信", "鼎盛", "优品", "睿思", "晨光", "天成", "博远", "金桥",
                "明德", "卓越", "新源", "汇通", "远航", "众合", "锦程", "嘉禾", "瑞丰", "启明", "长城"]  # fmt: skip
COMPANY_TRADE = [
    "科技",
    "信息技术",
    "贸易",
    "制造",
    "教育科技",
    "医疗器械",
    "物流",
    "电子",
    "新材料",
    "餐饮管理",
    "软件",
]
COMPANY_SUFFIX = ["有限公司", "有限责任公司", "股份有限公司", "集团有限公司"]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "霞", "平",
         "刚", "桂英", "建华", "晓东", "海燕", "志强", "雪梅", "文博"]  # fmt: skip
TITLES = [("总经理", "决策层"), ("采购经理", "经理"), ("IT 主管", "经理"), ("行政专员", "员工"), ("运营总监", "总监"),
          ("财务经理", "经理"), ("创始人", "决策层"), ("市场专员", "员工")]  # fmt: skip
REGIONS = {"华东": ["上海", "杭州", "苏州", "南京", "宁波"], "华南": ["广州", "深圳", "东莞", "佛山", "厦门"],
           "华北": ["北京"], "西南": ["成都"], "华中": ["武汉"]}  # fmt: skip
INDUSTRIES = ["制造业", "互联网", "教育", "医疗", "零售", "物流", "金融", "餐饮"]
CHANNELS = ["官网表单", "公众号", "百度推广", "展会", "老客户转介绍", "电话开发", "抖音投放"]
FOLLOWUP_TEXTS = [
    ("电话沟通了需求,客户目前用 Excel 管理客户,痛点是跟进容易漏。", "发送产品介绍和报价区间"),
    ("加了微信,发了案例,客户说下周内部讨论。", "下周三电话确认讨论结果"),
    ("上门拜访,见到了采购经理,演示了公海和提醒功能,反馈不错。", "准备正式报价单"),
    ("客户说预算要等下季度批,先保持联系。", "月底再联系确认预算进度"),
    ("电话未接通,发了短信留言。", "明天上午再打一次"),
    ("视频会议演示,IT 主管关心数据安全和私有部署。", "提供安全白皮书和部署方案"),
    ("客户在对比两家竞品,价格是主要顾虑。", "申请阶梯折扣后再沟通"),
    ("发了试用账号,客户团队试用了三天。", "收集试用反馈,约第二次演示"),
]  # fmt: skip


def _company(rng: random.Random) -> tuple[str, str]:
    region = rng.choice(list(REGIONS))
    city = rng.choice(REGIONS[region])
    name = f"{city}{rng.choice(COMPANY_CORE)}{rng.choice(COMPANY_TRADE)}{rng.choice(COMPANY_SUFFIX)}"
    return name, region


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


def _phone(rng: random.Random, used: set[str]) -> str:
    while True:
        phone = rng.choice(["138", "139", "136", "158", "186", "177", "150"]) + f"{rng.randrange(10**8):08d}"
        if phone not in used:
            used.add(phone)
            return phone


def seed_demo(
    session: Session, *, customers: int, seed: int, password: str, now: datetime
) -> list[tuple[str, str]]:
    """Create the demo data set; refuses when the database already has users other than admins."""
    if session.scalar(select(func.count()).select_from(Customer)):
        raise DemoError("the database already has customers; seed-demo only fills an empty database")
    if len(password) < 8:
        raise DemoError("the demo password needs at least 8 characters")
    rng = random.Random(seed)
    ensure_defaults(session, now)
    levels = {lv.name: lv for lv in session.scalars(select(Level))}
    teams: dict[str, Team] = {}
    users: dict[str, User] = {}
    for email, name, role, level_name, team_name in USERS:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = create_user(
                session, email=email, name=name, password=password, role=role,
                level=levels.get(level_name), now=now - timedelta(days=120),
            )  # fmt: skip
        if team_name:
            team = teams.get(team_name) or session.scalar(select(Team).where(Team.name == team_name))
            if team is None:
                team = Team(name=team_name)
                session.add(team)
            teams[team_name] = team
            user.team = team
        users[email] = user
    session.flush()
    teams["华东一组"].manager = users["wang.manager@demo.cn"]
    teams["华南一组"].manager = users["li.manager@demo.cn"]
    users["zhang.wei@demo.cn"].regions, users["zhang.wei@demo.cn"].skills = ["华东"], ["制造业", "互联网"]
    users["chen.jing@demo.cn"].regions, users["chen.jing@demo.cn"].skills = ["华南"], ["零售", "教育"]
    users["liu.yang@demo.cn"].regions = ["华东"]
    users["yang.fan@demo.cn"].regions = ["华南"]
    session.flush()

    pools = {
        "新线索池": Pool(name="新线索池", description="官网、投放、展会等新进线索,先到先得", kind="lead",
                      daily_claim_limit=5, prev_owner_rule=PrevOwnerRule.COOLDOWN, prev_owner_days=7,
                      mask_contacts=True, auto_assign_strategy=AssignStrategy.ROUND_ROBIN, created_at=now - timedelta(days=120)),
        "华东区域池": Pool(name="华东区域池", description="华东区域客户,华东一组可领", kind="region", region="华东",
                       daily_claim_limit=3, prev_owner_rule=PrevOwnerRule.PRIORITY, prev_owner_days=3,
                       mask_contacts=True, auto_assign_strategy=AssignStrategy.LOAD_BALANCE, created_at=now - timedelta(days=120)),
        "沉默客户池": Pool(name="沉默客户池", description="长期未成交、多次回收的客户,适合资深销售盘活", kind="silent",
                       daily_claim_limit=3, prev_owner_rule=PrevOwnerRule.COOLDOWN, prev_owner_days=14,
                       mask_contacts=False, fair_release=True, release_times=["10:00"], created_at=now - timedelta(days=120)),
    }  # fmt: skip
    for pool in pools.values():
        pool.release_times = pool.release_times or []
        session.add(pool)
    session.flush()
    session.add_all(
        [
            PoolMember(pool_id=pools["新线索池"].id, team_id=teams["华东一组"].id),
            PoolMember(pool_id=pools["新线索池"].id, team_id=teams["华南一组"].id),
            PoolMember(pool_id=pools["华东区域池"].id, team_id=teams["华东一组"].id),
            PoolMember(pool_id=pools["沉默客户池"].id, team_id=teams["华东一组"].id),
            PoolMember(pool_id=pools["沉默客户池"].id, team_id=teams["华南一组"].id),
            PoolAdmin(pool_id=pools["新线索池"].id, user_id=users["wang.manager@demo.cn"].id),
            PoolAdmin(pool_id=pools["华东区域池"].id, user_id=users["wang.manager@demo.cn"].id),
            PoolAdmin(pool_id=pools["沉默客户池"].id, user_id=users["li.manager@demo.cn"].id),
        ]
    )
    session.flush()

    stages = list(session.scalars(select(Stage).order_by(Stage.position)))
    open_stages = [s for s in stages if s.kind == "open"]
    reps = [u for u in users.values() if u.role == Role.REP]
    used_phones: set[str] = set()
    held = {u.id: 0 for u in reps}
    context = {"users": users, "teams": teams, "pools": pools, "stages": stages, "customers": []}
    for _ in range(customers):
        name, region = _company(rng)
        arrived = now - timedelta(days=rng.uniform(1, 90), minutes=rng.randrange(600))
        pool = pools["华东区域池"] if region == "华东" and rng.random() < 0.4 else pools["新线索池"]
        if rng.random() < 0.12:
            pool = pools["沉默客户池"]
        title, job_level = rng.choice(TITLES)
        score = max(0, min(100, int(rng.gauss(52, 20))))
        customer = Customer(
            name=name, name_key="", kind="company", lifecycle=Lifecycle.LEAD if rng.random() < 0.5 else Lifecycle.CUSTOMER,
            contact_name=_person(rng), job_title=title, job_level=job_level, phone=_phone(rng, used_phones),
            email=None, wechat=None, region=region, industry=rng.choice(INDUSTRIES),
            company_size=rng.choice([8, 20, 45, 120, 300, 800, 2000]), source=rng.choice(["form", "import", "api", "manual"]),
            channel=rng.choice(CHANNELS), campaign=rng.choice([None, "2026春季展会", "双十一投放", "行业白皮书"]), utm={},
            arrived_at=arrived, score=score, grade="A" if score >= 80 else "B" if score >= 50 else "C", score_breakdown={},
            is_hot=score >= 80, stage_id=open_stages[0].id, last_stage_change_at=arrived, pool_id=pool.id,
            pool_entered_at=arrived, created_at=arrived, updated_at=arrived,
        )  # fmt: skip
        customer.phone_key = "+86" + customer.phone
        session.add(customer)
        session.flush()
        context["customers"].append(customer)
        record_event(session, customer, EventKind.CREATED, arrived, actor_system="seed-demo", pool_id=pool.id,
                     result=customer.channel)  # fmt: skip
        # Roughly half are held by a rep, some were held before and recycled or released.
        history_start = arrived + timedelta(hours=rng.uniform(1, 72))
        if history_start >= now:
            continue
        if rng.random() < 0.25:
            _past_holding(session, rng, customer, rng.choice(reps), history_start, now, pool)
        # Stay a few below each rep's holding cap, so the demo reps can still claim from the pools.
        eligible = [
            u
            for u in reps
            if (pool.name != "华东区域池" or u.team.name == "华东一组")
            and held[u.id] < (u.level.holding_cap if u.level else 20) - 3
        ]
        if eligible and rng.random() < 0.55:
            owner = rng.choice(eligible)
            held[owner.id] += 1
            start = max(history_start, now - timedelta(days=rng.uniform(0.5, 40)))
            _current_holding(session, rng, customer, owner, start, now, pool, open_stages)
    session.flush()
    for seeder in EXTRA_SEEDERS:
        seeder(session, rng, now, context)
    session.flush()
    return [
        (email, f"{name} · {Role.LABELS[role]}" + (f" · {team}" if team else ""))
        for email, name, role, _lv, team in USERS
    ]


def _followups(session: Session, rng: random.Random, customer: Customer, user: User, start: datetime, end: datetime,
               n: int) -> list[FollowUp]:  # fmt: skip
    made = []
    for k in range(n):
        at = start + (end - start) * (k + 1) / (n + 1)
        content, plan = rng.choice(FOLLOWUP_TEXTS)
        fu = FollowUp(
            customer_id=customer.id, user_id=user.id, at=at, channel=rng.choice(Channel.ALL[:5]), content=content,
            goal_met=rng.random() < 0.4, next_plan=plan, next_contact_at=at + timedelta(days=rng.choice([1, 3, 7])),
            holding_no=customer.holding_no, score_at=customer.score, stage_id=customer.stage_id,
        )  # fmt: skip
        session.add(fu)
        made.append(fu)
    return made


def _past_holding(
    session, rng, customer: Customer, rep: User, start: datetime, now: datetime, pool: Pool
) -> None:
    end = min(now - timedelta(days=1), start + timedelta(days=rng.uniform(3, 20)))
    if end <= start:
        return
    customer.holding_no += 1
    record_event(session, customer, EventKind.CLAIMED, start, actor=rep, to_user_id=rep.id, pool_id=pool.id,
                 holding_no=customer.holding_no, result="领取成功")  # fmt: skip
    n = rng.choice([0, 0, 1, 2])
    _followups(session, rng, customer, rep, start, end, n)
    if n:
        customer.last_followup_at = end - (end - start) / (n + 1)
    if rng.random() < 0.6:
        record_event(session, customer, EventKind.RECYCLED, end, actor_system="回收规则: 7天未跟进", from_user_id=rep.id,
                     pool_id=pool.id, holding_followups=n, holding_no=customer.holding_no, reason="7 天未跟进")  # fmt: skip
    else:
        record_event(session, customer, EventKind.RELEASED, end, actor=rep, from_user_id=rep.id, pool_id=pool.id,
                     holding_followups=n, holding_no=customer.holding_no, reason="客户暂无需求",
                     note="客户说今年预算已用完,明年一季度可再联系采购经理。")  # fmt: skip
    customer.last_owner_id = rep.id
    customer.last_released_at = end
    customer.pool_entered_at = end


def _current_holding(session, rng, customer: Customer, owner: User, start: datetime, now: datetime, pool: Pool,
                     open_stages: list[Stage]) -> None:  # fmt: skip
    if customer.last_released_at and start <= customer.last_released_at:
        start = customer.last_released_at + timedelta(hours=2)
        if start >= now:
            return
    customer.holding_no += 1
    kind = EventKind.ASSIGNED if rng.random() < 0.3 else EventKind.CLAIMED
    record_event(session, customer, kind, start, actor=owner if kind == EventKind.CLAIMED else None,
                 actor_system=None if kind == EventKind.CLAIMED else "自动分配", to_user_id=owner.id, pool_id=pool.id,
                 holding_no=customer.holding_no)  # fmt: skip
    customer.owner_id = owner.id
    customer.claimed_at = start
    n = rng.choice([0, 1, 1, 2, 3, 4])
    fus = _followups(session, rng, customer, owner, start, now, n)
    if fus:
        customer.first_contact_at = fus[0].at
        customer.last_followup_at = fus[-1].at
        customer.holding_followups = n
        if rng.random() < 0.6:
            customer.stage_id = rng.choice(open_stages[1:]).id
            customer.last_stage_change_at = fus[0].at


# Recycle engine (issue 5): default rules for the demo pools.
def _recycle_demo_rules(session: Session, rng: random.Random, now: datetime, context: dict) -> None:
    from crm.recycle.demo import seed_demo_rules

    seed_demo_rules(session, rng, now, context)


EXTRA_SEEDERS.append(_recycle_demo_rules)
