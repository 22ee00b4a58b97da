# relay container image: one `relay serve` process per container, configured by environment variables.
#
#   docker build -t relay:0.1.0 .
#   docker run --rm -p 8000:8000 -e RELAY_DEV_MODE=true relay:0.1.0
#
# Two stages so that the runtime image carries no pip cache, no build metadata and nothing of the
# build context but the installed package.

# Same pinned base in both stages: the virtualenv copied below links to /usr/local/bin/python3.11,
# which must be the same interpreter at run time.
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# The pinned dependencies get their own layer, so an edit to relay's code does not reinstall them.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY relay ./relay
# --no-deps: everything relay needs is already installed from the lock; a dependency missing from the
# lock must fail `pip check` here instead of being fetched unpinned.
RUN pip install --no-deps . \
    && pip check


FROM python:3.11.14-slim-bookworm AS runtime

# PYTHONUNBUFFERED: log lines reach the container runtime as they are written, not when a buffer fills.
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes; bytecode was compiled at build.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
# -l: no lastlog/faillog entry, which for a high uid would make a sparse file of hundreds of MB.
RUN groupadd --system --gid 10001 relay \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin relay

COPY --from=build /opt/venv /opt/venv

# relay reads an optional ./.env; an empty directory owned by root means none is picked up by accident.
WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness only (GET /api/health never touches Redis), with the standard library: the slim image has
# no curl. PORT is honoured the same way `relay serve` honours it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/api/health', timeout=2)"]

# Exec form: relay is PID 1 and receives SIGTERM itself, so it can drain its WebSockets within
# RELAY_SHUTDOWN_GRACE. uvicorn installs its own SIGTERM/SIGINT handlers and reaps its workers.
CMD ["relay", "serve"]
