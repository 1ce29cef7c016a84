from __future__ import annotations

from flask import Blueprint, abort, request
from flask_bitrix24 import bx_call
from flask_login import current_user, login_required, login_user

from . import db
from .models import User

bp = Blueprint("host", __name__)


@bp.get("/")
def index():
    return "Welcome to the host app", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.route("/login/<int:user_id>", methods=["GET", "POST"])
def login_as(user_id: int):
    """Test-only convenience: sign in as a user without a password."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    login_user(user)
    return f"signed in as {user.email}", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.post("/my/contacts")
@login_required
def add_my_contact():
    """A host view calling Bitrix24 through the extension's service function."""
    name = (request.get_json(silent=True) or {}).get("name")
    if not isinstance(name, str) or not name:
        abort(400)
    envelope = bx_call("crm.contact.add", {"fields": {"NAME": name}}, client_id=current_user.client_id)
    return {"id": envelope["result"]}, 201
