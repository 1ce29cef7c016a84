"""Extension singletons, bound to an app by ``init_app`` (never holding an app themselves)."""

from flask_sqlalchemy import SQLAlchemy

from .bitrix24 import Bitrix24

db = SQLAlchemy()
bitrix24 = Bitrix24()
