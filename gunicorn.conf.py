"""gunicorn settings (docker-compose's web service). Access and error logs go through the same
phone-masking filter as the app's own logs: dashboard URLs can hold a patient's number."""

bind = "0.0.0.0:8000"
workers = 3
accesslog = "-"
errorlog = "-"
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
