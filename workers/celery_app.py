"""The Celery app. Results live in our own tables (clients poll the api), so no result backend."""

from __future__ import annotations

from celery import Celery

from facequeue.settings import get_settings

IMAGES_QUEUE = "images"  # interactive uploads
BULK_QUEUE = "images_bulk"  # batches and URL manifests: drained when no interactive work waits
RECOGNIZE_QUEUE = "recognize"
CALLBACKS_QUEUE = "callbacks"
# The order workers consume in: with the Redis transport's "priority" strategy a worker takes from the first
# non-empty queue of this list, so bulk work only runs when nothing interactive is waiting.
WORKER_QUEUES = (IMAGES_QUEUE, RECOGNIZE_QUEUE, CALLBACKS_QUEUE, BULK_QUEUE)


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("facequeue", broker=settings.resolved_broker_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,  # a message is acknowledged only once its task has finished
        task_reject_on_worker_lost=True,  # a child killed mid-task puts its message back
        worker_prefetch_multiplier=1,  # no hoarding: a slow image does not hold others hostage
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=IMAGES_QUEUE,
        task_routes={
            "facequeue.process_image": {"queue": IMAGES_QUEUE},
            "facequeue.recognize": {"queue": RECOGNIZE_QUEUE},
            "facequeue.deliver_callback": {"queue": CALLBACKS_QUEUE},
            "facequeue.deliver_batch_callback": {"queue": CALLBACKS_QUEUE},
            "facequeue.reembed_image": {"queue": BULK_QUEUE},
        },
        # A broker restart never ends a worker: reconnect forever (the default gives up after 100 tries).
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A task running when the broker connection drops finishes and stores its result; its message may
        # come again later, which is harmless (a finished job cannot be claimed again).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Publishing must not hang an upload: the job row is already committed, the reaper re-sends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        worker_send_task_events=settings.task_events,  # else on while Flower runs (it enables them)
    )
    if app.conf.broker_url.startswith("redis"):
        app.conf.broker_transport_options = {
            # An unacknowledged message is redelivered after this long. Dead workers are found sooner by
            # their job leases (the reaper), so this is only a last resort and must exceed any task.
            "visibility_timeout": 3600,
            # Notice a dead or restarted Redis within seconds instead of hanging on a half-open socket.
            "health_check_interval": 10,
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            # BRPOP over WORKER_QUEUES in that order (not round robin): interactive before bulk.
            "queue_order_strategy": "priority",
        }
    return app


app = make_celery()


# Redis serves priority 0 first (kombu's priority lists 0, 3, 6, 9). New work goes in at NORMAL; a
# callback (one short POST for work already done) at CALLBACK; what the reaper re-sends (a dead worker's
# jobs, messages a broker restart lost) is the oldest work and goes ahead of the backlog at RESENT, so
# recovery does not wait behind newer uploads.
NORMAL, CALLBACK, RESENT = 6, 3, 0


def enqueue_image(uid: str, queue: str = IMAGES_QUEUE, priority: int = NORMAL, countdown: float = 0) -> None:
    app.send_task(
        "facequeue.process_image",
        args=[uid],
        queue=queue,
        priority=priority,
        countdown=countdown or None,
    )


def enqueue_recognize(uid: str, priority: int = NORMAL) -> None:
    app.send_task("facequeue.recognize", args=[uid], queue=RECOGNIZE_QUEUE, priority=priority)


def enqueue_callback(uid: str, priority: int = CALLBACK) -> None:
    app.send_task("facequeue.deliver_callback", args=[uid], queue=CALLBACKS_QUEUE, priority=priority)


def enqueue_batch_callback(batch_id: int, countdown: float = 0) -> None:
    app.send_task(
        "facequeue.deliver_batch_callback",
        args=[batch_id],
        queue=CALLBACKS_QUEUE,
        countdown=countdown,
        priority=CALLBACK,
    )


def enqueue_reembed(image_uid: str, profile: str) -> None:
    app.send_task("facequeue.reembed_image", args=[image_uid, profile], queue=BULK_QUEUE, priority=NORMAL)
