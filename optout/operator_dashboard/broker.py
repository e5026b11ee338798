"""Queue depths for the operator dashboard, asked of the Celery broker with a
short timeout: a broker that is down is reported, never a failed page."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from kombu.exceptions import ChannelError, OperationalError

from config.celery import app
from optout.chunk_shards import shard_queue

logger = logging.getLogger("optout.operator_dashboard")

# A healthy Redis answers in milliseconds; two seconds tolerate a loaded box
# and still render the page promptly when the broker is down or unreachable.
BROKER_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class QueueDepth:
    name: str
    waiting: int


@dataclass(frozen=True)
class QueueDepths:
    # "ok"; "unreachable": the broker did not answer within
    # BROKER_TIMEOUT_SECONDS; "in_process": there is no broker, tasks run in
    # the web process (`make run` without Redis).
    broker: str
    queues: list[QueueDepth]


def broker_queue_names() -> list[str]:
    """The queues workers consume: the default one and, with the index split
    across workers, one per shard (optout.chunk_shards.shard_queue)."""
    names = [app.conf.task_default_queue]
    if settings.OPTOUT_SHARDS > 1:
        names += [shard_queue(shard) for shard in range(settings.OPTOUT_SHARDS)]
    return names


def queue_depths(*, queues: Sequence[str], timeout: float = BROKER_TIMEOUT_SECONDS) -> QueueDepths:
    """Messages waiting in each of ``queues`` (taken by no worker yet), asked
    of the Celery app's broker; an unreachable broker is reported, not raised."""
    if app.conf.task_always_eager:
        return QueueDepths(broker="in_process", queues=[])
    connection = app.connection_for_read(
        connect_timeout=timeout,
        transport_options={
            # Fail at once instead of kombu's retry loop (seconds per attempt):
            # the page says the broker is unreachable and the operator reloads.
            "max_retries": 0,
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        },
    )
    try:
        channel = connection.default_channel
        return QueueDepths(
            broker="ok", queues=[QueueDepth(name, _waiting(channel, name)) for name in queues]
        )
    except (OperationalError, *connection.connection_errors) as error:
        logger.warning("operator dashboard: broker unreachable: %s", error)
        return QueueDepths(broker="unreachable", queues=[])
    finally:
        connection.release()


def _waiting(channel: Any, queue: str) -> int:
    """The queue's message count, read without declaring it: Redis keeps a
    queue as lists (one per priority step) that kombu's queue_declare adds up,
    and deletes a list once it is empty, so a queue that is not found has
    none waiting. (Redis channels stay usable after a refused passive declare.)"""
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:
        return 0
