# syntax=docker/dockerfile:1
# Conduit on the official Airflow image (python 3.11 variant), dependencies pinned by uv.lock.
#
#   docker compose build            # or: docker build -t conduit-airflow:0.1.0 .
#
# Follows the official "extending the image" conventions
# (https://airflow.apache.org/docs/docker-stack/build.html): packages are installed with `pip` as the
# `airflow` user, `apache-airflow` is pinned to the image's version so pip can never swap Airflow out,
# and AIRFLOW_HOME stays /opt/airflow.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.8

# Stage 1: turn uv.lock into a flat, fully pinned requirements file (runtime dependencies only,
# no dev group, no project itself). `--frozen` fails the build if uv.lock is out of date.
FROM ghcr.io/astral-sh/uv:${UV_VERSION}-python${PYTHON_VERSION}-bookworm-slim AS lock
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-dev --no-hashes --no-emit-project --format requirements-txt \
        -o /src/requirements.txt

# Stage 2: the runtime image.
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CONDUIT_INCLUDE_DIR=/opt/airflow/include \
    CONDUIT_STAGING_DIR=/opt/airflow/staging

USER airflow

# Dependencies first (cached layer as long as uv.lock does not change).
COPY --from=lock /src/requirements.txt /opt/conduit/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/conduit/requirements.txt

# Then Conduit itself, without dependencies: everything it needs is already pinned above.
COPY --chown=airflow:0 pyproject.toml README.md /opt/conduit/src/
COPY --chown=airflow:0 plugins/conduit /opt/conduit/src/plugins/conduit
RUN pip install --no-cache-dir --no-deps /opt/conduit/src \
    && python -c "import airflow, conduit; assert airflow.__version__ == '${AIRFLOW_VERSION}', airflow.__version__" \
    && conduit-crm-standin --help >/dev/null \
    && conduit-order-services --help >/dev/null

# DAGs, specs/expectations and the deployment helpers (deploy/airflow-init.sh runs in airflow-init).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 deploy/ /opt/airflow/deploy/
RUN mkdir -p /opt/airflow/staging /opt/airflow/config

# The official entrypoint (/entrypoint) and default command stay in place: `docker run IMAGE scheduler`.
