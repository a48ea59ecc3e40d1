"""Names and limits that more than one service must agree on, defined once."""

from __future__ import annotations

# The Kafka topic of UsageEvent (proto/aig/events/v1): the router publishes, billing consumes.
USAGE_TOPIC = "aig.usage.v1"
# The Kafka topic of TaskRequested: the edge publishes each new media task, jobs consumes.
TASKS_TOPIC = "aig.tasks.v1"
# The Kafka topic of TaskEvent: jobs publishes every state change of a task, webhooks consumes.
TASK_EVENTS_TOPIC = "aig.task-events.v1"

# Largest gRPC message between edge and router either way: a request body may be up to
# AIG_MAX_BODY_BYTES (16 MiB default) of base64 images, with room to spare.
GRPC_MESSAGE_LIMIT = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
]
