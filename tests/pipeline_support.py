"""Small look-ups shared by the pipeline tests."""

from sqlalchemy import func, select

from crm.extensions import db
from crm.models import Stage


def stage(name: str) -> Stage:
    return db.session.scalar(select(Stage).where(Stage.name == name))


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))
