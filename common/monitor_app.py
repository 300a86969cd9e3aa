"""The Celery app Flower runs with: `celery -A common.monitor_app flower`.

Flower connects to the broker as a consumer (of events), and every kombu consumer re-queues unacked
messages older than its own visibility timeout. Started with Celery's defaults it would redeliver
every shard running longer than one hour, so it gets the cluster's own settings, checked against
the registered ones, like a worker.
"""

import sys

from common.broker import wait_for_broker
from common.celery_app import make_app
from common.cluster_settings import differences, registered_settings, shared_settings
from common.errors import ConfigError
from common.settings import load_settings

settings = load_settings()
registered = registered_settings(wait_for_broker(settings, lambda message: print(message, file=sys.stderr)))
if registered is not None:
    problems = differences(shared_settings(settings), registered["settings"])
    if problems:
        raise ConfigError("Flower's settings differ from the cluster's:\n  " + "\n  ".join(problems))
app = make_app(settings)
