"""gunicorn settings (docker-compose's web service).

No patient data in the logs: access and error lines go through the same masking as the app's
own logs (``bot.MaskPhones``: phone numbers in any encoding, query-string values such as a
dashboard search ``q=...`` redacted), and the access format leaves out the Referer, which
would repeat the previous page's URL (a search, a patient's page)."""

import gc

bind = "0.0.0.0:8000"
workers = 3
# Build the app once, in the master, and fork the workers from it (issue 9, start-up): the
# clinical rules are loaded and the reader's patterns compiled once instead of once per
# worker on the same cores, and a worker that dies is replaced in milliseconds. Nothing
# opened before the fork is used after it: redis-py replaces its connections in a process
# whose pid changed, the spool opens its file per text, the breaker and the replay lock are
# per-process objects with nothing held at fork time.
preload_app = True

# No garbage collection while the master imports and builds the app (about 100,000 objects,
# all long-lived: collecting them as they are made only costs time, about 40 ms of CPU a
# start); on again once the server is ready, before the workers are forked (when_ready).
gc.disable()


def when_ready(server):  # gunicorn calls it once the app is loaded, before forking workers
    gc.enable()


def pre_fork(server, worker):  # gunicorn calls it with both
    """The app's long-lived objects (the clinical rules, the state machine, the compiled
    patterns: about 60,000 of them) are moved out of the garbage collector's sight before
    each fork: a worker's full collection no longer walks them (32 to 57 ms each time here,
    a stall for the requests it was serving), and their memory pages stay shared with the
    master instead of being copied when the collector touches them."""
    gc.freeze()
# No runtime control socket (gunicorn >= 24 opens one under ~/.gunicorn): one less local
# channel into the service; restart the container to change anything.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
# remote address, time, request line (masked), status, bytes, duration in ms, user agent
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_phones": {"()": "bot.MaskPhones"}},
    "formatters": {"generic": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: "
                                         "%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "generic",
                             "filters": ["mask_phones"], "stream": "ext://sys.stdout"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
