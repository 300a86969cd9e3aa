"""Celery's request, with every execution option taken from the worker's settings, never from the
message. Anyone who can write to Redis can publish a message, and message signing (when on) covers
its body only: the headers are not signed. So a message's time limits (`timelimit`: a copy with a
0.1 s soft limit would fail a healthy shard), `eta`/countdown (a shard parked for a year),
`expires` (a shard dropped unrun) and the tasks it links to run after it (callbacks, errbacks,
chain, chord) are ignored. The app's task_time_limit and task_soft_time_limit apply to every task.
"""

import logging

from celery.worker.request import Request

log = logging.getLogger(__name__)

OPTIONS = ("timelimit", "eta", "expires")
WORKFLOW = ("callbacks", "errbacks", "chain", "chord", "group", "group_index")


class SettingsOnlyRequest(Request):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        asked = {k: self._request_dict.get(k) for k in OPTIONS if not unset(self._request_dict.get(k))}
        if asked:
            log.warning("message %s (%s) asks for %s: ignored, the worker's settings decide", self.id, self.name,
                        asked)
        self.time_limits = (None, None)  # None: the app's limits (QWEN3B_TASK_*TIME_LIMIT_S)
        self._eta = self._expires = None
        self._request_dict.update(timelimit=(None, None), eta=None, expires=None)  # a retry copies none of them


def unset(value) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and all(v is None for v in value))


def drop_workflow(request) -> None:
    """Forget the tasks a message links to (in its body, so signed or not): Celery would send them
    when this one succeeds or fails. No task of this project links to another."""
    for name in WORKFLOW:
        if getattr(request, name, None):
            log.warning("task %s: ignored its %s", request.id, name)
        setattr(request, name, None)
