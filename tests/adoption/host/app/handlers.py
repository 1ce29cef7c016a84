from __future__ import annotations

from flask_bitrix24 import Event, NotFound, runtime

from . import bitrix24, db
from .models import SeenEvent


@bitrix24.on("ONCRMCONTACTADD")
def contact_added(event: Event) -> None:
    try:
        name = event.fetch().get("NAME")  # events carry only the id
    except NotFound:  # deleted meanwhile
        name = None
    db.session.add(SeenEvent(event=event.name, client_id=event.client_id, entity_id=event.entity_id,
                             name=name, via=runtime().event_queue.name))
    db.session.commit()
