"""What a callback carries: the body built from a terminal `TaskEvent`.

The body is Kie's callback envelope around the task record: `{"code", "msg", "data"}`,
with `data` the record exactly as `GET /v1/jobs/recordInfo` returns it in `data` (the
event's `record` bytes, embedded unchanged). So the callback body is what recordInfo
answers at that moment, and a Kie client's callback handler (which reads `data.taskId`,
`data.state`, `data.resultJson`) works unchanged; a client that only wants the record reads
`data`. `code` is 200 for `success` and 501 (Kie's "generation failed") for `fail`.
"""

from __future__ import annotations

import logging

import orjson

from aig.events.v1 import events_pb2 as pb

log = logging.getLogger("webhooks")

TERMINAL_STATES = {pb.TASK_STATE_SUCCESS: "success", pb.TASK_STATE_FAIL: "fail"}
FAILED_CODE = 501


def is_deliverable(event: pb.TaskEvent) -> bool:
    return event.state in TERMINAL_STATES and bool(event.callback_url)


def callback_body(event: pb.TaskEvent) -> bytes:
    succeeded = event.state == pb.TASK_STATE_SUCCESS
    code = 200 if succeeded else FAILED_CODE
    message = "success" if succeeded else (event.error_message or "failed")
    record = bytes(event.record)
    try:
        valid = isinstance(orjson.loads(record), dict) if record else False
    except orjson.JSONDecodeError:
        valid = False
    if not valid:
        # The contract says jobs always sends the record; if it did not, the receiver still
        # gets the fields a Kie client needs rather than nothing.
        log.warning("task event %s has no valid record; sending the event's fields", event.event_id)
        record = orjson.dumps(
            {
                "taskId": event.task_id,
                "state": TERMINAL_STATES[event.state],
                "resultJson": bytes(event.result).decode() if event.result else "",
                "failCode": event.fail_code,
                "failMsg": event.error_message,
            }
        )
    return b'{"code":%d,"msg":%s,"data":%s}' % (code, orjson.dumps(message), record)
