# syntax=docker/dockerfile:1
# mlflow-app in a container: `mlflow-app serve` as PID 1, configured by environment variables.
# Build, run and deploy: docs/self-hosted.md. tests/e2e/test_container_image.py runs the uv steps
# and the ENTRYPOINT below outside a container, so this file cannot drift from the code.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment from uv.lock, exactly -----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# Byte-compiled at build time: the runtime user cannot write __pycache__ into the environment.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in their own layer: rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --extra postgres --extra s3 --no-install-project
COPY launcher ./launcher
COPY proxy ./proxy
COPY deploy ./deploy
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --extra postgres --extra s3 --no-editable

# --- run: the environment only, as an unprivileged user -----------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /data --no-create-home --shell /usr/sbin/nologin mlflow \
    && mkdir /data && chown mlflow:mlflow /data
COPY --from=build /app/.venv /app/.venv
# A container must listen on all interfaces. With no MLFLOW_APP_AUTH_TOKEN (or MLFLOW_APP_NO_AUTH=true
# when something in front authenticates users) the server refuses to start and says so.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=8000 \
    MLFLOW_APP_DATA_DIR=/data \
    MLFLOW_APP_LOG_FORMAT=json \
    MLFLOW_DISABLE_TELEMETRY=true
# The embedded default's SQLite database and artifacts; unused with PostgreSQL and an object store.
VOLUME /data
WORKDIR /data
USER mlflow:mlflow
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-m", "launcher.healthcheck"]
# Exec form: the server is PID 1 and gets SIGTERM itself; it drains, then stops MLflow's processes.
ENTRYPOINT ["mlflow-app", "serve"]
CMD []
