"""The standalone app with one event handler that notes, in the file $HANDLED_LOG, each event it
ran, then takes $HANDLER_SECONDS more (so a test can cut Redis while a job is finishing): what
tests/faults starts as a real ``flask bitrix24 worker`` process."""

from __future__ import annotations

import os
import time

from flask_bitrix24 import create_app
from flask_bitrix24.extensions import bitrix24

app = create_app()


@bitrix24.on("*")
def note(event) -> None:
    with open(os.environ["HANDLED_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{event.entity_id}\n")
    time.sleep(float(os.environ.get("HANDLER_SECONDS", "0")))
