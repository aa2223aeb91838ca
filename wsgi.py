"""Entry point for gunicorn (``gunicorn wsgi:app``) and ``flask --app wsgi``."""

import gc

# The app's objects are made once and kept (the engine, the rules): no garbage collection
# while they are made (start-up; gunicorn.conf.py does the same for the whole master).
gc.disable()
try:
    from bot import create_app

    app = create_app()
finally:
    gc.enable()
