"""The standalone app's ``db`` and its extension object (a host app has its own ``db`` and makes
its own ``Bitrix24(db=db)``; it never imports this module)."""

from .extension import Bitrix24
from .models.standalone import CRM, MIRRORS, AppInstallation, BitrixEvent, ClientCRMAuth, SyncState, db
from .store import CRMRow, EncryptedStore

__all__ = ["bitrix24", "db"]

# The seed's layout: credentials in client_crm_auth, tied to the Bitrix24 row of CRMs, which
# setup (and the first saved config) adds; our own Alembic branch creates the tables.
bitrix24 = Bitrix24(
    db=db,
    store=EncryptedStore(ClientCRMAuth, crm=CRMRow(CRM, defaults={})),
    event_model=BitrixEvent,
    installation_model=AppInstallation,
    sync_state_model=SyncState,
    mirror_models=MIRRORS,
    own_migrations=True,
)
