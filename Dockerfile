# The inbox service as a container image.
#   docker build -t inbox .
#   docker run --rm inbox inbox migrate        (with DATABASE_URL set: migrations are a separate step)
#   docker run -p 8000:8000 -e DATABASE_URL=... inbox
# docker-compose.yml wires it to PostgreSQL 15 with a one-shot migrate service.

# -- build: a virtualenv with the dependencies and the service (editable, at its final path) --
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app
# Dependencies first, so that a code change does not reinstall them.
COPY setup.cfg pyproject.toml README.md ./
COPY service/__init__.py service/__init__.py
RUN pip install -e .
COPY service/ service/
COPY sql/ sql/
COPY migrations/ migrations/
RUN python -m compileall -q service

# -- runtime: the same paths, no build tools, not root ------------------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin inbox \
    && mkdir /data && chown inbox:inbox /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    EMBEDDED_DATA_DIR=/data/pgdata
USER inbox
EXPOSE 8000
# Liveness with the image's own python (there is no curl in a slim image); urlopen raises,
# and so exits non-zero, on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=3)"]
CMD ["inbox", "serve"]
