"""All tables. Tables only: business rules live in the feature ``services`` modules."""

from .accounts import ApiToken, Level, LoginAttempt, Role, Team, User, UserSession
from .customers import (
    HARD_TAG,
    Activity,
    Contact,
    Customer,
    CustomerKind,
    Lifecycle,
    NameGram,
    Tag,
    customer_tags,
)
from .followups import (
    Channel,
    DeliveryStatus,
    EndpointBackoff,
    FollowUp,
    Reminder,
    ReminderDelivery,
    ReminderKind,
    ReminderStatus,
    SpotCheck,
    WebhookEndpoint,
)
from .intake import (
    BehaviorEvent,
    DuplicateConflict,
    ImportBatch,
    LeadForm,
    PendingDuplicateCheck,
    RateLimitHit,
    UsedFormToken,
)
from .ledger_guard import install_ledger_guard
from .ops import OpsHeartbeat, OpsJob
from .pools import (
    AssignStrategy,
    ClaimCount,
    EventKind,
    Pool,
    PoolAdmin,
    PoolEvent,
    PoolMember,
    PrevOwnerRule,
)
from .recycle import ExtensionRequest, Holiday, RecycleRule, RuleKind, SweepRun
from .reports import ReportPoolDaily, ReportRollup
from .sales import Contract, Opportunity, Quote, Stage, StageChange, StageKind, StageRequirement
from .settings import Setting, SettingsAudit
from .tasks import Task, TaskStatus

__all__ = [
    "HARD_TAG", "Activity", "ApiToken", "AssignStrategy", "BehaviorEvent", "Channel", "ClaimCount",
    "Contact", "Contract", "Customer", "CustomerKind", "DeliveryStatus", "DuplicateConflict", "EndpointBackoff", "EventKind",
    "ExtensionRequest", "FollowUp", "Holiday", "ImportBatch", "LeadForm", "Level", "Lifecycle",
    "LoginAttempt", "NameGram", "OpsHeartbeat", "OpsJob", "Opportunity", "PendingDuplicateCheck", "Pool", "PoolAdmin", "PoolEvent", "PoolMember",
    "PrevOwnerRule", "Quote", "RateLimitHit", "RecycleRule", "Reminder", "ReportPoolDaily", "ReportRollup", "ReminderDelivery",
    "ReminderKind", "ReminderStatus", "Role", "RuleKind", "Setting", "SettingsAudit", "SpotCheck", "Stage",
    "StageChange", "StageKind", "StageRequirement", "SweepRun", "Tag", "Task", "TaskStatus", "Team", "UsedFormToken",
    "User", "UserSession", "WebhookEndpoint",
    "customer_tags", "install_ledger_guard",
]  # fmt: skip

install_ledger_guard()
