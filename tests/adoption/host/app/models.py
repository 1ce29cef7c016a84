from __future__ import annotations

import datetime as dt

from flask_login import UserMixin

from . import db


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Client(db.Model):
    __tablename__ = "clients"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), unique=True, nullable=False)
    client_id = db.Column(db.Integer, db.ForeignKey("clients.id"), nullable=False)

    client = db.relationship(Client)


class CRMs(db.Model):
    __tablename__ = "CRMs"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64), unique=True, nullable=False)
    slug = db.Column(db.String(64), nullable=False)  # ours; the extension knows nothing of it


class ClientCRMAuth(db.Model):
    __tablename__ = "ClientCRMAuth"

    id = db.Column(db.Integer, primary_key=True)
    client_id = db.Column(db.Integer, db.ForeignKey("clients.id"), nullable=False)
    crm_id = db.Column(db.Integer, db.ForeignKey("CRMs.id"), nullable=False)
    webhook_url = db.Column(db.Text)  # kept as we always have: in clear
    app_token = db.Column(db.String(255), nullable=True)


class SeenEvent(db.Model):
    """What our handler saw of Bitrix24's events."""

    __tablename__ = "seen_events"

    id = db.Column(db.Integer, primary_key=True)
    event = db.Column(db.String(128), nullable=False)
    client_id = db.Column(db.Integer)
    entity_id = db.Column(db.String(64))
    name = db.Column(db.String(255))  # the contact's NAME, as fetched when the event was handled
    via = db.Column(db.String(16))  # "inline" (web process) or "rq" (the worker)
    created_at = db.Column(db.DateTime(timezone=True), default=_now, nullable=False)
