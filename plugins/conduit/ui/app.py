"""Conduit's sync health view: a FastAPI app the API server mounts at ``/conduit-ui``.

===========================================  ============================================================
``GET /``                                     the overview page: every sync the user may read
``GET /syncs/{dag_id}``                       one sync's page (a DAG that is no sync: a sentence saying so)
``GET /api/syncs``                            the overview as JSON (``limit``, ``offset``)
``GET /api/syncs/{dag_id}``                   one sync as JSON: runs, charts, gate, quarantine, plan, lineage
``GET /data-docs/{dag_id}/{run_id}/{path}``   the run's Great Expectations Data Docs, CDN URLs rewritten to
                                              the vendored files under ``/static/vendor/``
``GET /static/...``                           the pages' own CSS/JS and the vendored libraries (no data)
===========================================  ============================================================

Airflow does not authenticate plugin apps, so every route above except ``/static`` resolves the
Airflow user itself (``GetUserDep``: the Bearer header or the UI's ``_token`` cookie; none: 401,
a bad token: 403) and asks the auth manager (``get_auth_manager()``: ``AuthManagerDep`` reads the
root app's state, which a mounted app does not have) whether the user may read the DAG, its runs,
task instances and XComs. The overview lists only such DAGs; a sync the user may not read is a
403 with no data. The replay button is shown to users who may trigger the replay DAG, and the
page triggers it through Airflow's own REST API with the user's cookie, so Airflow checks that
permission again and records the action; the replay DAG's own facts (its latest run for the
sync, whether it is paused) are shown only to users who may read its runs. Each sync's health
stands on its own: a spec that does not load makes that sync failing in the overview (the others
render as ever) and its own page a 500; both name the spec's file (relative to the specs folder)
and the field to users who may see Airflow's import errors (a broken spec fails its DAG file),
and only that it does not load to others. An expectation suite that does not load makes its sync
failing (every run fails at the quality gate) and its page still renders, naming the suite's file
(relative to the expectations folder) and the field to users who may read the sync's task logs
(where Airflow shows the gate's failure). Never a path of the server: the whole message goes to
the server's log.
Responses never carry connection details: the state
store's errors name only the connection id and the exception type. Data Docs are served for a
sync's runs only, and no page of them but a site's index may run inline scripts: GX writes the
failing CRM values into its validation pages unescaped.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from conduit.ui import data, health
from conduit.ui.assets import STATIC, rewrite_cdn_urls

log = logging.getLogger(__name__)

MOUNT = "/conduit-ui"
HERE = Path(__file__).parent
OVERVIEW_LIMIT, OVERVIEW_MAX = 100, 500
RUNS_LIMIT = 30
QUARANTINE_SHOWN = 500
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
            "font-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'; object-src 'none'")
# GX's pages style and set up their tables inline; nothing may come from elsewhere
DATA_DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; "
                 "base-uri 'self'; object-src 'none'")
# GX writes the failing CRM values into its validation pages as they are, unescaped: a value
# "<script>..." or "<img onerror=...>" would run on Airflow's origin as the person viewing it. Only
# the site's index (runs and suites, no CRM value; bootstrap-table fills it from an inline script)
# keeps inline scripts; the other pages run the vendored files only (they lose GX's show/hide
# buttons and its walkthrough, not content).
DATA_DOCS_VALUES_CSP = DATA_DOCS_CSP.replace("script-src 'self' 'unsafe-inline'", "script-src 'self'")

templates = Jinja2Templates(directory=HERE / "templates")

# No /docs or /openapi.json: a smaller surface; the routes are listed in this module's docstring.
ui_app = FastAPI(title="Conduit sync health", docs_url=None, redoc_url=None, openapi_url=None)
ui_app.mount("/static", StaticFiles(directory=STATIC), name="static")


# --- who may see what --------------------------------------------------------------------------------


def _auth_manager():
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _read_requests(dag_id: str, team_name: str | None, entities: tuple[str, ...] | None = None
                   ) -> list[dict[str, Any]]:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    details = DagDetails(id=dag_id, team_name=team_name)
    wanted = (None, *(DagAccessEntity[e] for e in entities or ("RUN", "TASK_INSTANCE", "XCOM")))
    return [{"method": "GET", "access_entity": entity, "details": details} for entity in wanted]


def can_read(user: Any, dag_id: str, *, teams: Mapping[str, str | None] | None = None) -> bool:
    """The DAG, its runs, task instances and XComs: what the view shows of a sync. ``teams``: the
    DAGs' team names, read at once for many (else this DAG's is looked up)."""
    from airflow.models.dag import DagModel

    team_name = teams.get(dag_id) if teams is not None else DagModel.get_team_name(dag_id)
    return _auth_manager().batch_is_authorized_dag(_read_requests(dag_id, team_name), user=user)


def can_read_runs(user: Any, dag_id: str) -> bool:
    """The DAG and its runs: what the sync page shows of the replay DAG (whether it is paused, its
    latest run for the sync)."""
    from airflow.models.dag import DagModel

    return _auth_manager().batch_is_authorized_dag(
        _read_requests(dag_id, DagModel.get_team_name(dag_id), ("RUN",)), user=user)


def can_read_task_logs(user: Any, dag_id: str) -> bool:
    """The DAG's task logs: where Airflow shows why its quality gate failed (a suite that does
    not load)."""
    from airflow.models.dag import DagModel

    return _auth_manager().batch_is_authorized_dag(
        _read_requests(dag_id, DagModel.get_team_name(dag_id), ("TASK_LOGS",)), user=user)


def can_see_import_errors(user: Any) -> bool:
    """Airflow's DAG import errors: where a broken spec's problem shows (it fails its DAG file)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    return _auth_manager().is_authorized_view(access_view=AccessView.IMPORT_ERRORS, user=user)


def require_read(user: Any, dag_id: str) -> None:
    if not can_read(user, dag_id):
        raise HTTPException(403, "Forbidden")


def readable(user: Any, dag_ids: Iterable[str], session: Any) -> list[str]:
    """The DAGs of ``dag_ids`` the user may read, with one query for their team names (Airflow's
    per-DAG lookup is one query per DAG each time its short cache expires)."""
    from airflow.models.dag import DagModel

    wanted = set(dag_ids)
    allowed = _auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session) & wanted
    teams = DagModel.get_dag_id_to_team_name_mapping(sorted(allowed), session=session) if allowed else {}
    return sorted(d for d in allowed if can_read(user, d, teams=teams))


def can_trigger(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return _auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)), user=user)


# --- where things are ----------------------------------------------------------------------------------


def bases(request: Request) -> dict[str, str]:
    """URL prefixes: this app's (``/conduit-ui`` or below Airflow's ``[api] base_url`` path) and
    Airflow's own (for links to runs and for the REST API)."""
    ui = request.scope.get("root_path", "").rstrip("/")
    airflow = ui[: -len(MOUNT)] if ui.endswith(MOUNT) else ""
    return {"ui": ui, "airflow": airflow + "/", "static": f"{ui}/static"}


def _now() -> datetime:
    return datetime.now(UTC)


# --- the overview ----------------------------------------------------------------------------------------


def overview(user: Any, *, limit: int = OVERVIEW_LIMIT, offset: int = 0) -> dict[str, Any]:
    """Every sync the user may read, judged, most urgent first; ``syncs`` holds one page of them.
    All are judged, not only the page's: the summary counts and the order are over all of them,
    or a sync failing on page 2 would read "0 failing" on page 1. The queries are the same few
    for any number of syncs (each batched over all of them); state stores are read in parallel
    and remembered until the sync's runs change."""
    from airflow.utils.session import create_session

    specs, problems = data.load_sync_specs(), data.spec_problems()
    broken: dict[str, list[data.SpecProblem]] = {}
    for problem in problems:
        if problem.name:
            broken.setdefault(problem.name, []).append(problem)
    now = _now()
    with create_session() as session:
        names = readable(user, [*specs, *broken], session)
        facts = data.dag_facts(session, names)
        runs = data.latest_runs(session, names)
        replays = data.replay_runs(session, limit=5)
    good = [n for n in names if n in specs]
    replay_version = tuple((r["run_id"], r["state"]) for r in replays)
    versions = {n: (tuple((r.run_id, r.state) for r in runs.get(n, [])), replay_version) for n in good}
    states = data.read_states([specs[n] for n in good], versions)
    rows = health.most_urgent_first([
        *(_overview_row(specs[n], runs.get(n, []), states[n], facts.get(n), now, _suite_problem(user, specs[n]))
          for n in good),
        *(_broken_row(user, n, broken[n], runs.get(n, []), facts.get(n)) for n in names if n not in specs)])
    return {"generated_at": health._iso(now), "total": len(names), "limit": limit, "offset": offset,
            "verdicts": health.verdict_counts(rows), "spec_problems": _spec_message(user, problems),
            "syncs": rows[offset: offset + limit]}


SUITE_DOES_NOT_LOAD = "its expectation suite does not load"


def _suite_problem(user: Any, spec) -> str | None:
    """None when the spec's expectation suite loads (or it has none); else what the browser is
    told: the suite's file (relative to the expectations folder), the field and the problem to a
    user who may read the sync's task logs (the quality gate's log says the same), only that it
    does not load to others. The whole message goes to the log."""
    error = data.suite_error(spec)
    if error is None:
        return None
    log.error("sync %s: %s: %s", spec.name, SUITE_DOES_NOT_LOAD, error)
    if not can_read_task_logs(user, spec.name):
        return f"{SUITE_DOES_NOT_LOAD}; the quality gate's task log and the API server's log say why"
    return f"{SUITE_DOES_NOT_LOAD}: " + "; ".join(public_problem_lines(error, data.expectations_dir()))


def _broken_row(user: Any, name: str, problems: list[data.SpecProblem], runs: list[health.RunRecord],
                facts: data.DagFacts | None) -> dict[str, Any]:
    """The overview's line of a sync whose spec does not load: failing, saying why (to whom
    :func:`_spec_message` would), with the runs it had; nothing the spec would say."""
    if can_see_import_errors(user):
        why = ": " + "; ".join(line for p in problems for line in public_problem_lines(p.error, data.syncs_dir()))
    else:
        why = " (Airflow's DAG import errors and the API server's log say why)"
    last = health.latest_finished(runs)
    return {"name": name, "target_type": None, "schedule": None, "paused": bool(facts and facts.paused),
            "last_run": health._run_brief(runs[0] if runs else None), "last_finished_run": health._run_brief(last),
            "next_run": None, "freshness": None, "counts": health._counts(last) if last else None,
            "recent": [{**health._run_brief(r), "counts": health._counts(r)} for r in runs if r.finished],
            "quarantine_open": None, "verdict": health.FAILING, "spec_problem": True, "suite_problem": None,
            "reason": f"its spec does not load{why}; its DAG cannot be parsed until the spec is fixed",
            "description": ""}


def _overview_row(spec, runs, state: data.StateFacts, facts: data.DagFacts | None, now: datetime,
                  suite_problem: str | None = None) -> dict[str, Any]:
    schedule = spec.schedule
    error = state.error if state.error and _ever_loaded(runs) else None  # no run yet: no state tables yet
    paused = bool(facts and facts.paused)
    next_run = None if paused else (facts.next_run if facts and facts.next_run
                                    else health.next_cron_time(schedule.cron, schedule.timezone, now))
    row = health.overview_row(
        name=spec.name, cron=schedule.cron, timezone=schedule.timezone, lag_seconds=spec.source.cursor.lag_seconds,
        target_type=spec.target.type, runs=runs, watermark_ms=state.watermark_ms,
        quarantine_open=None if state.error else len(state.quarantine), next_run=next_run,
        paused=paused, now=now, state_error=error)
    row["description"] = (spec.description.strip().splitlines() or [""])[0]
    row["spec_problem"] = False
    row["suite_problem"] = suite_problem
    if suite_problem:  # the gate loads the suite: every run fails there until it is fixed
        note = f"every run fails at the quality gate: {suite_problem}"
        if row["verdict"] in (health.HEALTHY, health.STALE):
            row["verdict"], row["reason"] = health.FAILING, note
        else:
            row["reason"] += f"; {note}"
    return row


def _ever_loaded(runs: list[health.RunRecord]) -> bool:
    return any(isinstance(r.summaries.get("load"), dict) for r in runs)


# --- one sync --------------------------------------------------------------------------------------------


def sync_detail(user: Any, dag_id: str, request: Request, *, limit: int = RUNS_LIMIT,
                gate_run: str | None = None) -> dict[str, Any] | None:
    """Everything the sync page shows, or None for a DAG that is not a Conduit sync. The gate's
    results are the latest gated run's, or ``gate_run``'s (one of the runs shown)."""
    from airflow.utils.session import create_session

    specs = data.load_sync_specs()
    spec = specs.get(dag_id)
    if spec is None:
        return None
    now, urls = _now(), bases(request)
    with create_session() as session:
        facts = data.dag_facts(session, [dag_id, data.REPLAY_DAG_ID])
        runs = data.recent_runs(session, dag_id, limit)
        replay_readable = data.REPLAY_DAG_ID in facts and can_read_runs(user, data.REPLAY_DAG_ID)
        replays = [r for r in data.replay_runs(session) if r["sync"] == dag_id] if replay_readable else []
    state = data.read_state(spec)
    suite_problem = _suite_problem(user, spec)
    row = _overview_row(spec, runs, state, facts.get(dag_id), now, suite_problem)
    expectations = [] if suite_problem else health.expectations_of(data.suite_entries(spec))
    by_run = health.group_by_run(state.quarantine)
    gated = next((r for r in runs if isinstance(r.summaries.get("quality_gate"), dict)
                  and gate_run in (None, r.run_id)), None)
    plan = health.latest_plan(runs)
    docs_run = next((r for r in runs if _docs_exist(dag_id, r)), None)
    return {
        **row,
        "owner": spec.owner,
        "source": {"type": spec.source.type, "object": getattr(spec.source, "object", None),
                   "cursor": spec.source.cursor.property, "lag_seconds": spec.source.cursor.lag_seconds},
        "target": {"type": spec.target.type, "location": ".".join(spec.target.location), "key": spec.target.key,
                   "delete_mode": spec.target.delete_mode},
        "quality": spec.quality.model_dump() if spec.quality else None,
        "runs": _with_links(health.run_rows(runs), dag_id, urls),
        "charts": {"rows": health.chart_series(runs),
                   "pass_rate": health.pass_rate_history(runs, expectations, by_run)},
        "gate": {"run_id": gated.run_id, "checked": gated.summaries["quality_gate"].get("checked"),
                 "rejected": gated.summaries["quality_gate"].get("rejected"),
                 "passed": gated.summaries["quality_gate"].get("passed"),
                 "data_docs": _docs_url(urls, dag_id, gated.run_id) if _docs_exist(dag_id, gated) else None,
                 "expectations": health.expectation_results(
                     expectations, gated.summaries["quality_gate"], by_run.get(gated.run_id, ()), spec.mapping)}
        if gated else None,
        "quarantine": {"open": None if state.error else len(state.quarantine),
                       "entries": health.quarantine_rows(state.quarantine, spec.mapping, now, QUARANTINE_SHOWN)},
        "plan": {"run_id": plan[0], **_plain_plan(plan[1])} if plan else None,
        "lineage": health.lineage_rows(spec.mapping, _landing_fields(spec)),
        "replay": _replay(user, dag_id, facts.get(data.REPLAY_DAG_ID), replay_readable, replays),
        "links": {"dag": f"{urls['airflow']}dags/{dag_id}",
                  "replay_dag": f"{urls['airflow']}dags/{data.REPLAY_DAG_ID}",
                  "data_docs": _docs_url(urls, dag_id, docs_run.run_id) if docs_run else None,
                  "api": f"{urls['ui']}/api/syncs/{dag_id}"},
    }


def _with_links(rows: list[dict[str, Any]], dag_id: str, urls: dict[str, str]) -> list[dict[str, Any]]:
    from urllib.parse import quote

    for row in rows:
        row["url"] = f"{urls['airflow']}dags/{dag_id}/runs/{quote(row['run_id'], safe='')}"
        row["gate_url"] = f"{urls['ui']}/syncs/{dag_id}?run_id={quote(row['run_id'], safe='')}#gate"
        row["data_docs_url"] = _docs_url(urls, dag_id, row["run_id"]) if row.pop("data_docs") and \
            data.data_docs_dir(dag_id, row["run_id"]).is_dir() else None
    return rows


def _docs_exist(dag_id: str, run: health.RunRecord) -> bool:
    docs = run.summaries.get("data_docs")
    return isinstance(docs, dict) and bool(docs.get("data_docs")) and \
        (data.data_docs_dir(dag_id, run.run_id) / "index.html").is_file()


def _docs_url(urls: dict[str, str], dag_id: str, run_id: str) -> str:
    return f"{urls['ui']}/data-docs/{dag_id}/{_docs_site(dag_id, run_id)}/index.html"


def _docs_site(dag_id: str, run_id: str) -> str:
    """The run's Data Docs site in a URL: its folder's name (``[A-Za-z0-9_.-]``, what the run id
    becomes on disk), not the run id. Airflow's ``[scheduler] allowed_run_id_pattern`` may let a
    run id hold ``#``, ``?``, ``%``, spaces or ``/``, and even its default lets a final newline
    through, which no mounted app's route matches however quoted (Starlette's ``Mount`` pattern
    stops at a newline). The route takes a folder's name as it takes a run id (the same folder)."""
    from urllib.parse import quote

    return quote(data.data_docs_dir(dag_id, run_id).name, safe="")


def _plain_plan(plan: Any) -> dict[str, Any]:
    keep = ("inserted", "updated", "unchanged", "deleted", "stale_skipped", "active_before", "changed_columns",
            "samples", "needs_approval", "approval_reason")
    return {k: plan.get(k) for k in keep} if isinstance(plan, dict) else {}


def _landing_fields(spec) -> dict[str, str] | None:
    fields = getattr(spec.target, "fields", None)
    return fields.model_dump() if fields is not None else None


def _replay(user: Any, dag_id: str, facts: data.DagFacts | None, may_read: bool,
            replays: list[dict[str, Any]]) -> dict[str, Any]:
    """The replay button's facts. ``paused`` and ``latest`` are the replay DAG's: None for a user
    who may not read its runs (``may_read``), whatever they are."""
    return {"dag_id": data.REPLAY_DAG_ID, "exists": facts is not None,
            "paused": bool(facts and facts.paused) if may_read else None,
            "can_trigger": facts is not None and can_trigger(user, data.REPLAY_DAG_ID),
            "conf": {"sync": dag_id, "dry_run": False},
            "latest": _replay_brief(replays[0]) if may_read and replays else None}


def _replay_brief(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["run_id"], "state": run["state"], "start_date": health._iso(run["start_date"]),
            "end_date": health._iso(run["end_date"])}


# --- routes ----------------------------------------------------------------------------------------------


def _page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, {"bases": bases(request), **context},
                                          status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(payload: Any) -> JSONResponse:
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


def _spec_message(user: Any, problems: list[data.SpecProblem]) -> str | None:
    """None without ``problems``; else what the browser is told: each spec file that does not load
    (see :func:`public_spec_problem`) to a user who may see Airflow's import errors, only how many
    to others. The whole messages, with the server's paths, go to the log."""
    if not problems:
        return None
    for problem in problems:
        log.error("a sync spec does not load: %s", problem.error)
    head = f"{len(problems)} sync spec{' does' if len(problems) == 1 else 's do'} not load"
    if not can_see_import_errors(user):
        return f"{head}; Airflow's DAG import errors and the API server's log say why."
    folder = data.syncs_dir()
    return f"{head}:\n" + "\n".join(line for p in problems for line in public_problem_lines(p.error, folder))


def public_spec_problem(exc: Any, folder: Path) -> str:
    """A ``SpecError``'s message as a browser may see it: each problem names its spec by the file's
    path relative to ``folder`` (the specs folder), the field and what is wrong, and no absolute
    path of the server is left in it."""
    return "\n".join([str(exc).partition("\n")[0], *public_problem_lines(exc, folder)])  # "invalid sync spec"


def public_problem_lines(exc: Any, folder: Path) -> list[str]:
    """A ``SpecError``'s problems, one a line, as :func:`public_spec_problem` shows them."""
    lines = []
    for where, problem in exc.problems:
        if Path(where).is_absolute():  # several files' problems: (file, "field: problem")
            lines.append(f"{_spec_file(where, folder)}: {problem}")
        else:
            lines.append(f"{_spec_file(exc.path, folder)}: {where}: {problem}")
    return [without_server_paths(line) for line in lines]


def _spec_file(path: str, folder: Path) -> str:
    try:
        relative = Path(path).relative_to(folder)
    except ValueError:
        return Path(path).name
    return str(relative) if relative.parts else "(the specs folder)"


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/[^\s'\"`,;()<>]+")


def without_server_paths(text: str) -> str:
    """``text`` with every absolute path that starts in a folder of this server cut to its last
    part (its file name); a slash that names no folder here (``/v3/objects``) stays."""
    def cut(match: re.Match[str]) -> str:
        path = match.group(0)
        return path.rstrip("/").rsplit("/", 1)[-1] if _is_server_folder(path.split("/")[1]) else path

    return _ABSOLUTE_PATH.sub(cut, text)


def _is_server_folder(name: str) -> bool:
    try:
        return bool(name) and Path("/", name).exists()
    except (OSError, ValueError):  # a NUL byte, a name too long: no folder here
        return False


def _own_spec_problem(user: Any, dag_id: str) -> str | None:
    """What :func:`_spec_message` tells of the specs that say they are ``dag_id`` and do not load
    (the other syncs' specs are not this page's business)."""
    return _spec_message(user, [p for p in data.spec_problems() if p.name == dag_id])


@ui_app.get("/api/syncs")
def api_syncs(user: GetUserDep, limit: int = Query(OVERVIEW_LIMIT, ge=1, le=OVERVIEW_MAX),
              offset: int = Query(0, ge=0)) -> JSONResponse:
    return _json(overview(user, limit=limit, offset=offset))


@ui_app.get("/api/syncs/{dag_id}")
def api_sync(dag_id: str, request: Request, user: GetUserDep,
             limit: int = Query(RUNS_LIMIT, ge=1, le=data.MAX_RUNS), run_id: str | None = None) -> JSONResponse:
    require_read(user, dag_id)
    if problem := _own_spec_problem(user, dag_id):
        raise HTTPException(500, problem)
    detail = sync_detail(user, dag_id, request, limit=limit, gate_run=run_id)
    if detail is None:
        raise HTTPException(404, f"{dag_id} is not a Conduit sync")
    return _json(detail)


@ui_app.get("/", response_class=HTMLResponse)
@ui_app.get("/syncs", response_class=HTMLResponse, include_in_schema=False)
def overview_page(request: Request, user: GetUserDep, limit: int = Query(OVERVIEW_LIMIT, ge=1, le=OVERVIEW_MAX),
                  offset: int = Query(0, ge=0)) -> HTMLResponse:
    return _page(request, "overview.html", {"view": overview(user, limit=limit, offset=offset)})


@ui_app.get("/syncs/{dag_id}", response_class=HTMLResponse)
def sync_page(dag_id: str, request: Request, user: GetUserDep,
              limit: int = Query(RUNS_LIMIT, ge=1, le=data.MAX_RUNS), run_id: str | None = None) -> HTMLResponse:
    require_read(user, dag_id)
    if problem := _own_spec_problem(user, dag_id):
        return _page(request, "message.html", {"title": dag_id, "message": problem}, 500)
    detail = sync_detail(user, dag_id, request, limit=limit, gate_run=run_id)
    if detail is None:  # the tab shows on every DAG page
        return _page(request, "message.html", {
            "title": dag_id, "message": f"{dag_id} is not a Conduit sync: no spec in include/syncs names it."})
    boot = {"name": dag_id, "charts": detail["charts"], "replay": detail["replay"], "bases": bases(request),
            "api": detail["links"]["api"]}
    return _page(request, "sync.html", {"sync": detail, "boot": boot})


@ui_app.get("/data-docs/{dag_id}/{run_id}/{path:path}")
def data_docs(dag_id: str, run_id: str, path: str, request: Request, user: GetUserDep) -> Response:
    require_read(user, dag_id)
    wanted = _data_docs_file(dag_id, run_id, path)
    if wanted is None:
        raise HTTPException(404, "no such Data Docs file")
    if wanted.suffix.lower() not in (".html", ".htm"):
        media_type = mimetypes.guess_type(wanted.name)[0] or "application/octet-stream"
        return FileResponse(wanted, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
    urls = bases(request)
    site_url = f"{urls['ui']}/data-docs/{dag_id}/{_docs_site(dag_id, run_id)}/"
    html = rewrite_cdn_urls(wanted.read_text(errors="replace"), f"{urls['static']}/vendor/",
                            f"{site_url}static/images/")
    csp = DATA_DOCS_CSP if _is_site_index(dag_id, run_id, wanted) else DATA_DOCS_VALUES_CSP
    return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})


def _is_site_index(dag_id: str, run_id: str, page: Path) -> bool:
    return page == data.data_docs_dir(dag_id, run_id).resolve() / "index.html"


def _data_docs_file(dag_id: str, run_id: str, path: str) -> Path | None:
    """The file of a sync run's Data Docs site the request names, or None. Only a sync's: the
    site's folder is named by the DAG id as given, so another id (``..``, decoded from ``%2E%2E``)
    would reach the staged CRM records beside the sites, and a run id ``..`` another sync's sites.
    A NUL byte is no path either (``resolve`` raises ``ValueError`` on it)."""
    if dag_id not in data.load_sync_specs() or "\x00" in run_id + path:
        return None
    site = data.data_docs_dir(dag_id, run_id)
    if site.name == "..":  # a run id "..": the folder of every sync's sites (Airflow refuses it for a run)
        return None
    site = site.resolve()
    wanted = (site / (path or "index.html")).resolve()
    return wanted if wanted.is_relative_to(site) and wanted.is_file() else None


# --- errors: JSON for the API, a short page for a browser -----------------------------------------------


@ui_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    wants_page = not request.url.path.removeprefix(request.scope.get("root_path", "")).startswith("/api/") and \
        "text/html" in request.headers.get("accept", "")
    if not wants_page:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
    message = {401: "Log in to Airflow to see Conduit's sync health.",
               403: "You may not read this DAG (or your login is no longer valid)."}.get(exc.status_code, str(exc.detail))
    login = _login_url(request) if exc.status_code in (401, 403) else None
    return _page(request, "message.html", {"title": f"{exc.status_code}", "message": message, "login": login},
                 exc.status_code)


def _login_url(request: Request) -> str | None:
    try:
        return bases(request)["airflow"].rstrip("/") + "/" + _auth_manager().get_url_login(
            next_url=str(request.url)).lstrip("/")
    except Exception:  # noqa: BLE001 - no auth manager (tests of the app alone): no link
        return None
