# One image for the web app and the worker (docker-compose.yml runs both from it).
#
# Stage 1 builds the wheel from the source; stage 2 installs only that wheel: the image holds
# no source tree, so it runs exactly what `pip install` of the wheel gives (templates, static
# files and the default flows inside the package; scripts/check_wheel.sh proves the same
# wheel works from a fresh venv outside the source tree).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md wsgi.py ./
COPY bot ./bot
COPY flows ./flows
COPY tests/vignettes ./tests/vignettes
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --create-home --home-dir /home/triage --uid 10001 triage
COPY gunicorn.conf.py /etc/triage/gunicorn.conf.py
# Not root: the service needs no privilege; it writes nothing but its logs (Redis keeps state).
USER triage
WORKDIR /home/triage
EXPOSE 8000
# The web app's health; docker-compose.yml gives the worker its own (its heartbeat in Redis).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gunicorn", "--config", "/etc/triage/gunicorn.conf.py", "wsgi:app"]
