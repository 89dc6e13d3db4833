"""The Celery app. Results live in our own tables (clients poll the api), so no result backend."""

from __future__ import annotations

from celery import Celery

from facequeue.settings import get_settings

IMAGES_QUEUE = "images"
RECOGNIZE_QUEUE = "recognize"
CALLBACKS_QUEUE = "callbacks"


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
        },
        broker_connection_retry_on_startup=True,
        # Publishing must not hang an upload: the job row is already committed, the reaper re-sends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        worker_send_task_events=True,  # Flower shows tasks live
    )
    if app.conf.broker_url.startswith("redis"):
        # An unacknowledged message is redelivered after this long; longer than any task may run.
        app.conf.broker_transport_options = {"visibility_timeout": max(3600, 2 * settings.job_lease_s)}
    return app


app = make_celery()


def enqueue_image(uid: str) -> None:
    app.send_task("facequeue.process_image", args=[uid], queue=IMAGES_QUEUE)


def enqueue_recognize(uid: str) -> None:
    app.send_task("facequeue.recognize", args=[uid], queue=RECOGNIZE_QUEUE)


def enqueue_callback(uid: str, countdown: float = 0) -> None:
    app.send_task("facequeue.deliver_callback", args=[uid], queue=CALLBACKS_QUEUE, countdown=countdown)
