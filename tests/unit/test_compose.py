"""docker-compose.yaml, the Dockerfile and the e2e harness describe the same deployment.

The shared source of truth is tests/e2e/topology.py: the same Airflow components and commands, the
same executor and auth manager, the same variables and mounts. `docker-compose config -q` (Debian's
docker-compose v1) must accept the file; under CI=true the binary must be installed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from e2e import topology

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(topology.COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def test_every_component_the_harness_runs_is_a_compose_service_with_the_same_command(services):
    for name, argv in topology.AIRFLOW_COMPONENTS.items():
        assert name in services, f"compose lacks {name}"
        assert tuple(_command(services[name])) == argv, name
    for name in (*topology.SUPPORT_SERVICES, topology.INIT_SERVICE):
        assert name in services, f"compose lacks {name}"
    # nothing long-running in compose that the harness does not also start
    default_profile = {n for n, s in services.items() if not s.get("profiles")}
    expected = {*topology.AIRFLOW_COMPONENTS, *topology.SUPPORT_SERVICES, topology.INIT_SERVICE}
    assert default_profile == expected


def test_airflow_services_share_environment_mounts_and_image(services):
    for name in (*topology.AIRFLOW_COMPONENTS, topology.INIT_SERVICE):
        service = services[name]
        env = _env(service)
        missing = [v for v in topology.REQUIRED_ENV if v not in env]
        assert not missing, f"{name} lacks {missing}"
        for key, value in topology.FIXED_ENV.items():
            assert env[key] == value, f"{name}: {key}={env[key]!r}, harness uses {value!r}"
        mounts = {m.group(2): m.group(1) for m in
                  (re.fullmatch(r"(.*):(/[^:]+)(?::(?:ro|rw))?", v) for v in service["volumes"])}
        for folder, target in topology.MOUNTS.items():
            assert target in mounts, f"{name} does not mount {folder} at {target}"
            assert mounts[target].endswith("/" + folder), (name, mounts[target])
        assert mounts[topology.STAGING_DIR_IN_IMAGE] == topology.STAGING_VOLUME
        assert env["CONDUIT_STAGING_DIR"] == topology.STAGING_DIR_IN_IMAGE
        assert env["CONDUIT_INCLUDE_DIR"] == topology.MOUNTS["include"]
        assert service["image"] == services["airflow-apiserver"]["image"]


def test_celery_executor_wiring(services):
    env = _env(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith(f"redis://:@{topology.BROKER_SERVICE}:6379/")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert f"@{topology.METADATA_DB_SERVICE}/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["CONDUIT_REDIS_URL"].startswith(f"redis://{topology.BROKER_SERVICE}:6379/")
    # the worker must shut down warmly (dumb-init must not send the signal to the whole group)
    assert _env(services["airflow-worker"])["DUMB_INIT_SETSID"] == "0"


def test_connections_point_at_the_stand_in_and_the_erp_database(services):
    env = _env(services["airflow-worker"])
    hubspot = json.loads(env["AIRFLOW_CONN_HUBSPOT_DEFAULT"])
    erp = json.loads(env["AIRFLOW_CONN_ERP_DEFAULT"])
    assert hubspot["conn_type"] == topology.CONNECTION_TYPES["AIRFLOW_CONN_HUBSPOT_DEFAULT"]
    assert erp["conn_type"] == topology.CONNECTION_TYPES["AIRFLOW_CONN_ERP_DEFAULT"]
    assert hubspot["extra"] == {"api_version": topology.HUBSPOT_API_VERSION}
    standin = services[topology.STANDIN_SERVICE]
    port = re.search(r"--port (\d+)", " ".join(_command(standin))).group(1)
    assert hubspot["host"] == f"http://{topology.STANDIN_SERVICE}:{port}"
    assert topology.STANDIN_COMMAND in " ".join(_command(standin))
    # the stand-in's token and the connection's password are the same variable
    assert "CONDUIT_STANDIN_TOKEN" in hubspot["password"]
    assert "CONDUIT_STANDIN_TOKEN" in _env(standin)["CONDUIT_STANDIN_TOKEN"] or \
        _env(standin)["CONDUIT_STANDIN_TOKEN"].startswith("${CONDUIT_STANDIN_TOKEN")
    assert erp["host"] == topology.ERP_DB_SERVICE
    erp_env = _env(services[topology.ERP_DB_SERVICE])
    assert (erp["login"], erp["password"], erp["schema"]) == (
        erp_env["POSTGRES_USER"], erp_env["POSTGRES_PASSWORD"], erp_env["POSTGRES_DB"])


def test_order_connections_point_at_the_order_services_and_the_saga_log_at_the_erp_database(services):
    order_services = services[topology.ORDER_SERVICES_SERVICE]
    command = " ".join(_command(order_services))
    assert re.search(rf"\bexec {topology.ORDER_SERVICES_COMMAND} --host 0\.0\.0\.0 --port "
                     rf"{topology.ORDER_SERVICES_PORT}\b", command), command
    assert order_services["image"] == services["airflow-apiserver"]["image"]
    # the admin API has no auth: published on the loopback only
    assert order_services["ports"] == [f"127.0.0.1:{topology.ORDER_SERVICES_PORT}:{topology.ORDER_SERVICES_PORT}"]
    assert str(topology.ORDER_SERVICES_PORT) in " ".join(order_services["healthcheck"]["test"])
    assert services["airflow-worker"]["depends_on"][topology.ORDER_SERVICES_SERVICE] == {
        "condition": "service_healthy"}
    for name in (*topology.AIRFLOW_COMPONENTS, topology.INIT_SERVICE):
        env = _env(services[name])
        for variable in topology.ORDER_SERVICE_CONNECTIONS:
            conn = json.loads(env[variable])
            assert conn == {"conn_type": topology.CONNECTION_TYPES[variable],
                            "host": f"http://{topology.ORDER_SERVICES_SERVICE}:{topology.ORDER_SERVICES_PORT}",
                            "extra": topology.ORDER_SERVICE_EXTRA}, (name, variable)
        saga = json.loads(env[topology.SAGA_CONNECTION_ENV])
        assert saga == json.loads(env["AIRFLOW_CONN_ERP_DEFAULT"])  # the saga log lives in the ERP database
        assert saga["conn_type"] == topology.CONNECTION_TYPES[topology.SAGA_CONNECTION_ENV]


def test_the_order_services_command_is_the_module_the_harness_falls_back_to():
    scripts = tomllib.loads((topology.REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[topology.ORDER_SERVICES_COMMAND] == f"{topology.ORDER_SERVICES_MODULE}:main"
    assert topology.ORDER_SERVICE_CONNECTIONS == {f"AIRFLOW_CONN_{s.upper()}_DEFAULT": s
                                                  for s in ("inventory", "payment", "fraud", "shipping")}


def _module_constants(path) -> dict[str, object]:
    """The module-level ``NAME = <constant expression>`` assignments of a file, without importing it."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = eval(compile(ast.Expression(node.value), str(path), "eval"),
                                                 {"__builtins__": {}})
            except Exception:  # noqa: BLE001 - not a constant expression
                pass
    return found


def test_the_review_timeout_is_a_deployment_setting_the_dag_reads(services):
    dag_file = topology.REPO / "dags" / "order_fulfilment.py"
    constants = _module_constants(dag_file)
    assert constants["REVIEW_TIMEOUT_ENV"] == topology.ORDER_REVIEW_TIMEOUT_ENV
    assert constants["DEFAULT_REVIEW_TIMEOUT_S"] == topology.ORDER_REVIEW_TIMEOUT_DEFAULT_S
    assert topology.ORDER_REVIEW_TIMEOUT_ENV in (ast.get_docstring(ast.parse(dag_file.read_text())) or "")
    for name in (*topology.AIRFLOW_COMPONENTS, topology.INIT_SERVICE):
        assert _env(services[name])[topology.ORDER_REVIEW_TIMEOUT_ENV] == \
            f"${{{topology.ORDER_REVIEW_TIMEOUT_ENV}:-{topology.ORDER_REVIEW_TIMEOUT_DEFAULT_S}}}", name
    assert topology.ORDER_REVIEW_TIMEOUT_ENV in topology.COMPOSE_FILE.read_text().split("---", 1)[0]  # documented


def test_openlineage_is_configured_through_the_environment(services):
    transport = json.loads(_env(services["airflow-worker"])["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] in ("file", "console")
    if transport["type"] == "file":
        assert transport["log_file_path"].startswith(topology.MOUNTS["logs"] + "/")
    # a commented Marquez (http transport) example is offered
    assert re.search(r"#\s*AIRFLOW__OPENLINEAGE__TRANSPORT:.*\"type\": \"http\"",
                     topology.COMPOSE_FILE.read_text())


def test_init_service_runs_the_init_script_the_harness_runs(services):
    init = services[topology.INIT_SERVICE]
    assert _command(init)[-1] == f"/opt/airflow/{topology.INIT_SCRIPT.relative_to(topology.REPO)}"
    assert init["user"] == "0:0"
    for name in topology.AIRFLOW_COMPONENTS:
        assert services[name]["depends_on"][topology.INIT_SERVICE]["condition"] == \
            "service_completed_successfully"
    script = topology.INIT_SCRIPT.read_text()
    assert "airflow db migrate" in script
    assert os.access(topology.INIT_SCRIPT, os.X_OK)


def test_dockerfile_builds_from_the_lock_on_the_official_image():
    text = topology.DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    assert args["AIRFLOW_VERSION"] == topology.AIRFLOW_VERSION
    assert args["PYTHON_VERSION"] == topology.PYTHON_VERSION
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in text
    assert "uv export --frozen --no-dev --no-hashes" in text
    assert "pip install --no-cache-dir --no-deps /opt/conduit/src" in text
    assert re.search(r"^USER airflow$", text, flags=re.M)
    for folder in ("dags/", "include/", "deploy/"):
        assert f"COPY --chown=airflow:0 {folder} /opt/airflow/{folder}" in text
    ignored = topology.REPO.joinpath(".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_the_dockerfile_export_command_works_on_this_lock():
    uv = shutil.which("uv")
    if uv is None:
        if IN_CI:
            pytest.fail("uv is required under CI=true", pytrace=False)
        pytest.skip("uv not installed")
    out = subprocess.run([uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
                          "--format", "requirements-txt"], cwd=topology.REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", out, flags=re.M))
    assert pins["apache-airflow"] == topology.AIRFLOW_VERSION
    assert "apache-airflow-providers-celery" in pins
    assert "pytest" not in pins and "playwright" not in pins  # no dev group in the image


def test_docker_compose_accepts_the_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        if IN_CI:
            pytest.fail("docker-compose is required under CI=true (apt-get install -y docker-compose)",
                        pytrace=False)
        pytest.skip("docker-compose not installed (apt-get install -y docker-compose)")
    result = subprocess.run([binary, "-f", str(topology.COMPOSE_FILE), "config", "-q"], cwd=topology.REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "AIRFLOW_UID": "50000"})
    assert result.returncode == 0, result.stderr
    services = subprocess.run([binary, "-f", str(topology.COMPOSE_FILE), "config", "--services"],
                              cwd=topology.REPO, capture_output=True, text=True, timeout=120, check=True)
    assert {*topology.AIRFLOW_COMPONENTS, *topology.SUPPORT_SERVICES} <= set(services.stdout.split())
