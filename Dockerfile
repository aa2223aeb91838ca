FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY flows ./flows
COPY wsgi.py gunicorn.conf.py ./
RUN pip install --no-cache-dir . && useradd --create-home triage
USER triage
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
