# syntax=docker/dockerfile:1
# One image build for every aig service, from uv.lock. The final stages differ only in their
# entrypoint: `docker build --target edge -t aig-edge .` (router, billing, jobs, webhooks,
# migrate and sandbox likewise). deploy/compose.yaml and k8s/ use exactly these targets and
# commands; tests/deploy keeps the three consistent.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve the locked dependencies into /app/.venv -----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# The same uv as scripts/bootstrap.sh, from PyPI.
RUN pip install --no-cache-dir "uv==0.13.8"
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.11
# Then aig itself, as a regular (non-editable) wheel, so /src is not needed at run time.
COPY services ./services
COPY gen ./gen
RUN uv sync --frozen --no-dev --no-editable --python /usr/local/bin/python3.11

# --- runtime: the interpreter, the venv, a non-root user; nothing else ------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 aig \
 && useradd --system --uid 10001 --gid aig --home-dir /var/lib/aig --no-create-home aig \
 && install -d -o aig -g aig /var/lib/aig
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIG_VAR_DIR=/var/lib/aig \
    AIG_SPOOL_DIR=/var/lib/aig/spool
WORKDIR /var/lib/aig
USER 10001:10001

FROM runtime AS edge
EXPOSE 8080
ENTRYPOINT ["python", "-m", "edge"]

FROM runtime AS router
EXPOSE 50051 50052 9464
ENTRYPOINT ["python", "-m", "router"]

FROM runtime AS billing
EXPOSE 9465
ENTRYPOINT ["python", "-m", "billing"]

FROM runtime AS jobs
EXPOSE 9466
ENTRYPOINT ["python", "-m", "jobs"]

FROM runtime AS webhooks
EXPOSE 9467
ENTRYPOINT ["python", "-m", "webhooks"]

FROM runtime AS migrate
ENTRYPOINT ["python", "-m", "controldb", "migrate"]

# Provider simulators: for laptops and dev clusters without provider keys.
FROM runtime AS sandbox
EXPOSE 8090
ENTRYPOINT ["python", "-m", "sandbox"]
