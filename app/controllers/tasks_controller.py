"""Tasks' own actions. CRUD, lists, ``all=1``, bulk writes and events of tasks go through the generic
record endpoints, driven by the tasks row of the entity table (``entities.TASKS``); only what no CRM
entity has lives here.

Bitrix24's side: https://apidocs.bitrix24.com/api-reference/tasks/status/tasks-task-complete.html
"""

from __future__ import annotations

from ..entities import TASKS
from ..services import records


def complete_task(client_id: int, record_id: int):
    """Complete a task (``tasks.task.complete``): the task as it is after. A task under control whose
    creator is someone else goes to "awaiting control" (status 4) rather than "completed" (5); a task
    that cannot move (already completed, or unknown) is Bitrix24's own 400 refusal."""
    return {"result": records.act(TASKS, record_id, "complete", client_id=client_id)}
