"""Named crash points: where the crash-matrix tests kill a task process with SIGKILL.

Every point is one ``crash_point("name")`` call and is inert unless a test arms it: with
``CONDUIT_CRASH_AT=<name>`` and ``CONDUIT_CRASH_ONCE=<marker file>`` in the environment, the first
process that reaches the point creates the marker file and SIGKILLs itself (no ``finally``, no
``atexit``, no rollback sent: as a worker killed by the OOM killer). The marker keeps the retry
clean: a later process passing the same point carries on. Unarmed, a point costs one environment
lookup.

``tests/reliability/test_crash_matrix.py`` kills a sync at each point and checks that the retry
leaves the ERP, the state store (watermark) and the quarantine exactly as one clean run does
(``test_tryton_crash_points.py``: the Tryton points; the saga point is killed after each of the
order saga's five service calls). ``tests/reliability/mechanism_off.py`` (outside CI; see
``tests/reliability/README.md``) kills at every point again with the mechanism of the second table
switched off, and the same comparison must come out unequal.

=================================  ===============================================  ==========================================
name                               where                                            what a kill there leaves behind
=================================  ===============================================  ==========================================
plan_extract.start                 ``CrmExtractPlanOperator.execute``, first line   nothing; the retry plans the run
plan_extract.end                   ``CrmExtractPlanOperator.execute``, planned      raw/ and archived/ emptied; no XCom
extract.start                      ``CrmExtractOperator.execute``, first line       the item's earlier parts (a previous try)
extract.between_pages              ``steps.write_pages``, a page buffered           a part folder with some parts or none
extract.between_parts              ``steps.write_pages``, a part written            complete parts, more pages unread
extract.end                        ``CrmExtractOperator.execute``, item staged      the item's parts; no XCom
transform.start                    ``MappingTransformOperator.execute``             raw/ as staged
transform.between_batches          ``steps.transform``, a batch mapped              mapped/ partly written
transform.end                      ``MappingTransformOperator.execute``, mapped     mapped/ complete; no XCom
quality_gate.start                 ``QualityGateOperator.execute``                  mapped/; nothing in the quarantine
quality_gate.quarantined           ``steps.gate``, after the quarantine insert      quarantine rows (committed); no defects
quality_gate.end                   ``QualityGateOperator.execute``, decided         quarantine and defects written; no XCom
plan.start                         ``ErpPlanOperator.execute``                      nothing new
plan.end                           ``ErpPlanOperator.execute``, planned             plan.json; the plan's transaction gone
load.start                         ``ErpUpsertOperator.execute``                    nothing new
load.before_copy                   ``SqlErpTarget.load``, lock held, temp table     an open transaction (rolled back)
load.mid_copy                      ``PostgresErpTarget._stage``, 1st batch copied   a COPY in progress (rolled back)
load.after_copy                    ``SqlErpTarget.load``, before the merge          staged rows in a temp table (rolled back)
load.after_merge                   ``SqlErpTarget.load``, before the watermark      upserts and deletes, uncommitted
load.before_commit                 ``SqlErpTarget.load``, last statement done       rows + watermark + marks, uncommitted
load.end                           ``ErpUpsertOperator.execute``, committed         the committed load; no XCom, no event
reconcile.start                    ``ReconcileOperator.execute``                    the loaded ERP, staged files
reconcile.before_staging_removal   ``ReconcileOperator.execute``, checked           the staged files
reconcile.end                      ``ReconcileOperator.execute``, files removed     no staged files; no XCom
replay.before_load                 ``pipeline.replay.replay``, records re-checked   open entries, nothing loaded
replay.after_load                  ``pipeline.replay.replay``, load committed       loaded rows, entries closed; no summary
tryton.batch_written               ``TrytonTarget._apply``, a batch in Tryton       parties the ledger does not know yet
tryton.batch_updated               ``TrytonTarget._apply``, updates in Tryton       new values; ledger: old version, write pending
tryton.before_watermark            ``TrytonTarget.load``, every change applied      all parties and ledger; old watermark
tryton.reactivated                 ``TrytonTarget._write_party``, 1st of 2 writes   a party active, old values; ledger: deactivated
tryton.batch_deleted               ``TrytonTarget._apply``, deletions in Tryton     parties inactive or gone; ledger: active
saga.action_done                   ``InlineSaga.step``, the action returned         an effect whose result is not logged
=================================  ===============================================  ==========================================

What makes a kill at each point harmless, and how ``mechanism_off.py`` switches it off. "Retry"
means that nothing there can do harm by itself (nothing written yet, or nothing the ERP keeps):
what recovers the run is Airflow's retry running the task again,
switched off either as "no retry" (the run stops there) or "go on" (the killed task taken as
succeeded, the run goes on with what it staged).

=================================  ==========================================================================
name                               mechanism (switched off as)
=================================  ==========================================================================
plan_extract.start                 retry (no retry)
plan_extract.end                   retry: raw/ and archived/ are emptied again, the plan is the XCom (no retry)
extract.start                      retry, never past a failed extract (go on)
extract.between_pages              retry, never past a failed extract (go on)
extract.between_parts              the item's folder emptied before a retry writes it + dedup (both: appends)
extract.end                        the item's folder emptied before a retry writes it + dedup (both: appends)
transform.start                    retry, never past a failed transform (go on)
transform.between_batches          mapped/ emptied before a retry writes it (appends: the gate sees keys twice)
transform.end                      mapped/ emptied before a retry writes it (appends)
quality_gate.start                 retry, never past a failed gate (go on: the rejected rows load)
quality_gate.quarantined           the quarantine's unique index once_per_record + ON CONFLICT (index dropped)
quality_gate.end                   the quarantine's unique index once_per_record + ON CONFLICT (index dropped)
plan.start                         retry; the plan's transaction is always rolled back (no retry)
plan.end                           retry; the plan's transaction is always rolled back (no retry)
load.start                         retry (no retry)
load.before_copy                   rows, deletes and watermark in one transaction (watermark committed first)
load.mid_copy                      rows, deletes and watermark in one transaction (watermark committed first)
load.after_copy                    rows, deletes and watermark in one transaction (watermark committed first)
load.after_merge                   rows, deletes and watermark in one transaction (watermark committed first)
load.before_commit                 rows, deletes and watermark in one transaction (watermark committed first)
load.end                           the retried load writes only newer versions (any version, a later run's rows)
reconcile.start                    retry; reconcile only reads (no retry)
reconcile.before_staging_removal   retry; staged files go only after the check (no retry)
reconcile.end                      retry; removing removed files is a no-op (no retry)
replay.before_load                 retry (no retry)
replay.after_load                  entries closed in the load's transaction (closed after it, on their own)
tryton.batch_written               the load reads back Tryton's parties by code before it creates (not read);
                                   the batch is announced in the ledger first, settled next load (not announced)
tryton.batch_updated               the batch is announced in the ledger first, settled next load (not announced)
tryton.before_watermark            the load reads back Tryton's parties by code before it creates (not read)
tryton.reactivated                 the ledger's "deactivated" overrides Tryton's active flag (Tryton's flag read)
tryton.batch_deleted               the ledger catches up with Tryton's inactive or missing party (ledger trusted)
saga.action_done                   the step's idempotency key on every try (a key per try)
=================================  ==========================================================================
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ARM = "CONDUIT_CRASH_AT"
ONCE = "CONDUIT_CRASH_ONCE"


def crash_point(name: str) -> None:
    """SIGKILL this process at ``name`` if a test armed it (see the module's table); else nothing."""
    if os.environ.get(ARM) != name:
        return
    marker = os.environ.get(ONCE)
    if not marker:
        return
    try:
        Path(marker).touch(exist_ok=False)  # atomic: of two processes at the point, one dies
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
