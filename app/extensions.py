"""The standalone app's ``db`` and its extension object (a host app has its own ``db`` and makes
its own ``Bitrix24(db=db)``; it never imports this module)."""

from flask_sqlalchemy import SQLAlchemy

from .extension import Bitrix24
from .store import CRMRow, EncryptedStore

db = SQLAlchemy()

from .models.standalone import CRM, BitrixEvent, ClientCRMAuth  # noqa: E402  (they need db)

# The seed's layout: credentials in client_crm_auth, tied to the Bitrix24 row of CRMs, which
# setup (and the first saved config) adds; our own Alembic branch creates the tables.
bitrix24 = Bitrix24(
    db=db,
    store=EncryptedStore(ClientCRMAuth, crm=CRMRow(CRM, defaults={})),
    event_model=BitrixEvent,
    own_migrations=True,
)
