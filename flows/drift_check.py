"""drift-check: a new dataset version landed in W&B -> KS / chi-square drift report -> event.

Triggered by `wandb.artifact.created` for the configured dataset collection(s) (see prefect.yaml):
the new version is compared with the collection's `reference` alias. Also runs ad hoc:

    python -m flows.drift --reference ref.parquet --current cur.parquet --json

Statistics live in `flows.drift` (no Prefect), loading in `flows.drift_data`.
"""


import math
import os
import re
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.wandb import WandbConfigError, WandbUnavailable, retry_if_unavailable
from flows.drift import Correction, DriftReport, check_options, ks_drift
from flows.outcomes import decision


def _fmt(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else float(f"{x:.6g}")
    return x


def _cell(x: Any) -> Any:
    """A contract row's value as a W&B table cell: numbers kept, anything else as text."""
    if isinstance(x, bool) or x is None:
        return x
    return _fmt(x) if isinstance(x, (int, float)) else str(x)


def dataset_resource(ref: str) -> dict[str, str]:
    """The Prefect resource naming a dataset: its W&B artifact when it is one, else its path."""
    m = re.match(r"^(?:wandb://)?([\w.-]+)/([\w.-]+)/([\w.-]+):([\w.-]+)$", ref)
    if m and not os.path.exists(ref):
        entity, project, collection, version = m.groups()
        return {
            "prefect.resource.id": f"wandb.artifact.{entity}/{project}/{collection}:{version}",
            "prefect.resource.name": f"{collection}:{version}",
            "wandb.entity": entity, "wandb.project": project,
            "wandb.collection": collection, "wandb.version": version,
        }
    return {"prefect.resource.id": f"modelops.dataset.{ref}", "prefect.resource.name": os.path.basename(ref) or ref}


@task(name="load-dataset", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE,
      retry_condition_fn=lambda t, r, s: not isinstance(getattr(s, "data", None),
                                                        (FileNotFoundError, ValueError, WandbConfigError)))
def load_dataset(ref: str, columns: list[str] | None, wandb_block: str | None) -> Any:
    from flows.drift_data import load_table

    wandb = _wandb_credentials(wandb_block) if _is_wandb_ref(ref) else None
    df = load_table(ref, columns, wandb=wandb, missing_ok=True)
    get_run_logger().info("loaded %s: %d rows x %d columns", ref, len(df), len(df.columns))
    return df


@task(name="check-data-contract", cache_policy=NO_CACHE)
def check_data_contract(ref_df: Any, cur_df: Any, reference: str, current: str, coerce_numeric: bool) -> Any:
    """Both tables held to the data contract before any statistic: no rows, repeated names, numbers
    that are not numbers and infinities are refused; ids and free text are left out of the test and
    reported. Published as the table artifact `drift-data-contract`. Returns the tables as the contract
    keeps them, the artifact's rows and the two reports (the flow raises DataContractError, naming
    column and cells, once the rows are in W&B too)."""
    from flows.data_contract import ContractOptions, check_table

    options = ContractOptions(coerce_numeric=coerce_numeric, drop_high_cardinality=True)
    ref_clean, ref_report = check_table(ref_df, options=options, what=f"reference {reference}")
    cur_clean, cur_report = check_table(cur_df, options=options, what=f"current {current}")
    rows = [{"table": name, **r} for name, rep_ in (("reference", ref_report), ("current", cur_report))
            for r in rep_.rows_table()]
    refused = [*ref_report.errors, *cur_report.errors]
    create_table_artifact(key="drift-data-contract", table=rows,
                          description=("REFUSED: " + "; ".join(refused)) if refused else
                          "Data contract of both tables: passed" + "".join(
                              f"; {w}" for w in [*ref_report.warnings, *cur_report.warnings]))
    logger = get_run_logger()
    for warning in [*ref_report.warnings, *cur_report.warnings]:
        logger.warning("data contract: %s", warning)
    return ref_clean, cur_clean, rows, (ref_report, cur_report)


def _is_wandb_ref(ref: str) -> bool:
    from flows.drift_data import classify_ref

    return classify_ref(ref) == "wandb"


def _wandb_credentials(block: str | None) -> Any:
    from blocks.wandb import WandbCredentials

    if block:
        return WandbCredentials.load(block)
    return WandbCredentials.from_env()


def drift_figures(report: DriftReport, ref_df: Any, cur_df: Any, label_shift: Any, plot_all: bool) -> dict[str, str]:
    """SVG per drifted feature (every tested one with `plot_all`) and for the label: reference vs
    current distributions with D (or V) and p. Keyed by column name."""
    from flows.plots import drift_figure

    out: dict[str, str] = {}
    shown = [f for f in report.features if f.test != "skipped" and (f.drifted or plot_all)]
    for f in shown:
        out[str(f.name)] = drift_figure(ref_df[f.name], cur_df[f.name], str(f.name), test=f.test,
                                        statistic=f.effect if f.effect is not None else f.statistic,
                                        p_value=f.p_value_adjusted if f.p_value_adjusted is not None else f.p_value)
    if label_shift is not None and label_shift.test != "skipped" and (label_shift.drifted or plot_all):
        out[str(label_shift.name)] = drift_figure(ref_df[label_shift.name], cur_df[label_shift.name],
                                                  str(label_shift.name), test=label_shift.test,
                                                  statistic=label_shift.effect, p_value=label_shift.p_value,
                                                  label="label")
    return out


def publish_report(report: DriftReport, reference: str, current: str, label_shift: Any = None,
                   figures: dict[str, str] | None = None) -> None:
    rows = [
        {"feature": f.name, "test": f.test, "statistic": _fmt(f.statistic), "p_value": _fmt(f.p_value),
         "p_value_adjusted": _fmt(f.p_value_adjusted), "drifted": f.drifted,
         "n_reference": f.n_reference, "n_current": f.n_current, "reason": f.reason or ""}
        for f in report.features
    ]
    create_table_artifact(key="drift-features", table=rows,
                          description=f"Per-feature drift of {current} against {reference}")
    drifted = [f.name for f in report.drifted]
    verdict = f"**Drift detected** in {len(drifted)} feature(s): " + ", ".join(f"`{n}`" for n in drifted) \
        if report.drift_detected else "**No drift** detected."
    skipped = "".join(f"\n- `{f.name}` skipped: {f.reason}" for f in report.skipped)
    figures = figures or {}
    from flows.plots import image_markdown

    shown = [f for f in report.features if str(f.name) in figures]
    plots = "".join(f"\n\n{image_markdown(figures[str(f.name)], f'{f.name}: reference vs current')}" for f in shown)
    label = ""
    if label_shift is not None:
        moved = label_shift.drifted
        label = (f"\n\n### Label shift: `{label_shift.name}`\n\n"
                 + ("**The label's distribution moved**" if moved else "The label's distribution did not move")
                 + f" ({label_shift.test}, p = {_fmt(label_shift.p_value)}; reported apart from the features: "
                   f"a label shift changes the base rate a model was calibrated on, not its inputs)"
                 + (f"\n\n{image_markdown(figures[str(label_shift.name)], 'label: reference vs current')}"
                    if str(label_shift.name) in figures else ""))
    create_markdown_artifact(
        key="drift-summary",
        markdown=(f"# Drift check\n\n{verdict}\n\n| | |\n|---|---|\n| current | `{current}` |\n"
                  f"| reference | `{reference}` |\n| features tested | {len(report.features) - len(report.skipped)} |\n"
                  f"| alpha | {report.alpha} ({report.correction}) |\n| min statistic | {report.min_statistic} |\n"
                  + (f"\n### Distributions{plots}\n" if plots else "")
                  + label
                  + (f"\n\n### Skipped{skipped}\n" if skipped else "")),
        description="Drift verdict, with reference vs current distributions of the drifted features",
    )


@task(name="log-to-wandb", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20],
      retry_condition_fn=retry_if_unavailable)
def log_to_wandb(report: DriftReport | None, reference: str, current: str, wandb_block: str | None,
                 contract: list[dict[str, Any]] | None = None, refused: list[str] | None = None,
                 figures: dict[str, str] | None = None) -> str | None:
    """Log the report and the data contract's rows to W&B: online with credentials, else an offline run
    kept locally. With `report` None (the contract refused the tables) the run holds the contract alone,
    so a W&B user sees why no drift statistic was computed."""
    from blocks.wandb import WandbCredentials

    creds = _wandb_credentials(wandb_block)
    offline = creds is None
    creds = creds or WandbCredentials()
    config: dict[str, Any] = {"reference": reference, "current": current}
    if report is not None:
        config.update(alpha=report.alpha, correction=report.correction)
    run = creds.init_run(job_type="drift-check", config=config, offline=offline)
    try:
        import wandb

        log_contract(run, contract or [], refused or [])
        if report is not None:
            columns = ["feature", "test", "statistic", "p_value", "p_value_adjusted", "drifted"]
            table = wandb.Table(columns=columns, data=[
                [f.name, f.test, _fmt(f.statistic), _fmt(f.p_value), _fmt(f.p_value_adjusted), f.drifted]
                for f in report.features])
            run.log({"drift/features": table})
            run.summary["drift_detected"] = report.drift_detected
            run.summary["drifted_features"] = [f.name for f in report.drifted]
        if figures:  # the same SVGs as the Prefect artifact
            run.log({f"drift/plots/{name}": wandb.Html(svg) for name, svg in figures.items()})
        # online: the run's W&B path (entity/project/id, readable with wandb.Api().run); offline: its directory
        where = getattr(run, "dir", None) if offline else run.path
    except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
        run.finish(exit_code=1)
        raise creds.failure(exc, f"logging the drift report of {current}") from None
    run.finish()
    get_run_logger().info("logged to W&B (%s)%s", "offline" if offline else "online", f": {where}" if where else "")
    return where


def wandb_table(rows: list[dict[str, Any]]) -> Any:
    """Rows (dicts, as for a Prefect table artifact) as a `wandb.Table`: one column per key, numbers
    kept, anything else as text."""
    import wandb

    columns = list(dict.fromkeys(k for row in rows for k in row))
    return wandb.Table(columns=columns, data=[[_cell(row.get(c)) for c in columns] for row in rows])


def log_contract(run: Any, rows: list[dict[str, Any]], refused: list[str]) -> None:
    """The data contract's rows as the W&B table `data_contract` of `run`, and its verdict in the
    summary (`data_contract`: passed | refused, `data_contract_problems`)."""
    if rows:
        run.log({"data_contract": wandb_table(rows)})
    run.summary["data_contract"] = "refused" if refused else "passed"
    if refused:
        run.summary["data_contract_problems"] = list(refused)


def emit_drift_event(report: DriftReport, reference: str, current: str, label_shift: Any = None) -> None:
    emit_event(
        event="modelops.drift.detected" if report.drift_detected else "modelops.drift.checked",
        resource=dataset_resource(current),
        related=[{**{k: v for k, v in dataset_resource(reference).items() if k.startswith("prefect.")},
                  "prefect.resource.role": "reference"}],
        payload={
            "dataset": current,
            "reference": reference,
            "drift_detected": report.drift_detected,
            "drifted_features": [f.name for f in report.drifted],
            "features_tested": len(report.features) - len(report.skipped),
            "alpha": report.alpha,
            "correction": report.correction,
            "label_shift": None if label_shift is None else {
                "label": label_shift.name, "shifted": label_shift.drifted, "test": label_shift.test,
                "p_value": label_shift.p_value, "statistic": label_shift.effect},
        },
    )


def _run_name() -> str:
    from prefect.runtime import flow_run

    current = str(flow_run.parameters.get("current", ""))
    return f"drift-{current.rstrip('/').rsplit('/', 1)[-1] or 'dataset'}"


@flow(name="drift-check", flow_run_name=_run_name, log_prints=True)
def drift_check(
    reference: str,
    current: str,
    alpha: float = 0.05,
    correction: Correction = "bonferroni",
    min_statistic: float = 0.0,
    drift_share: float | None = None,
    columns: list[str] | None = None,
    wandb_block: str | None = None,
    log_wandb: bool = True,
    event_id: str | None = None,
    coerce_numeric: bool = False,
    target: str | None = None,
    plot_all: bool = False,
    model: str | None = None,
) -> Any:
    """Compare `current` with `reference` feature by feature and report drift.

    `target` (the label column) is tested apart and reported as label shift, never as a drifted
    feature. The summary artifact shows reference vs current distributions of every drifted feature
    (of every tested one with `plot_all`). `model` (the registry collection trained on this data)
    gets the verdict on its status board. Ends `Drift` or `NoDrift` (both Completed)."""
    logger = get_run_logger()
    logger.info("drift-check of %s against %s", current, reference)
    ks_drift_args = dict(alpha=alpha, correction=correction, min_statistic=min_statistic, drift_share=drift_share)
    check_options(**ks_drift_args)  # bad options fail before any data is read

    ref_df = load_dataset(reference, columns, wandb_block)
    cur_df = load_dataset(current, columns, wandb_block)
    ref_df, cur_df, contract, reports = check_data_contract(ref_df, cur_df, reference, current, coerce_numeric)
    refused = [e for rep in reports for e in rep.errors]
    if refused:
        if log_wandb:
            _log_quietly(None, reference, current, wandb_block, contract, refused)
        for rep in reports:
            rep.raise_for_errors()
    names = list(columns) if columns else list(dict.fromkeys([*ref_df.columns, *cur_df.columns]))
    label_shift = None
    if target and target in ref_df.columns and target in cur_df.columns:
        # the label's classes, compared as categories (chi-square), at the same alpha, not corrected
        labels = ks_drift(ref_df[[target]].astype("string"), cur_df[[target]].astype("string"), alpha=alpha,
                          correction="none")
        label_shift = labels.features[0]
        logger.info("label %s: %s (p = %s)", target, "shifted" if label_shift.drifted else "not shifted",
                    _fmt(label_shift.p_value))
    elif target:
        logger.warning("label column %r is not in both tables: no label shift reported", target)
    report = ks_drift(ref_df, cur_df, columns=[c for c in names if c != target], **ks_drift_args)
    logger.info("drift %s: %s", "DETECTED" if report.drift_detected else "not detected",
                ", ".join(f.name for f in report.drifted) or "no feature drifted")

    figures = drift_figures(report, ref_df, cur_df, label_shift, plot_all)
    publish_report(report, reference, current, label_shift, figures)
    if log_wandb:
        _log_quietly(report, reference, current, wandb_block, contract, None, figures)
    emit_drift_event(report, reference, current, label_shift)
    drifted = [f.name for f in report.drifted]
    from flows.dataset_notes import note_on_dataset

    note_on_dataset(current, "drift", {
        "drift_detected": report.drift_detected, "drifted_features": [str(n) for n in drifted],
        "label_shifted": bool(label_shift and label_shift.drifted), "reference": reference},
        alias="drifted" if report.drift_detected else None,
        wandb=_wandb_credentials(wandb_block) if _is_wandb_ref(current) else None)
    result = {**report.to_dict(), "target": target,
              "label_shift": None if label_shift is None else label_shift.to_dict()}
    if model:
        from flows.status_board import record_drift

        record_drift(model, current, reference, result)
    return decision("Drift" if report.drift_detected else "NoDrift", success=True,
                    message=(f"drift in {', '.join(map(str, drifted))}" if drifted else "no feature drifted")
                    + f" ({current} against {reference})", data=result)


def _log_quietly(report: DriftReport | None, reference: str, current: str, wandb_block: str | None,
                 contract: list[dict[str, Any]], refused: list[str] | None,
                 figures: dict[str, str] | None = None) -> None:
    """log_to_wandb, where W&B being down costs a warning, not the verdict; a configuration error (a
    refused key, ...) fails the run: fix it, don't hide it."""
    try:
        log_to_wandb(report, reference, current, wandb_block, contract, refused, figures)
    except WandbUnavailable as exc:
        # W&B down: the verdict still goes out (the Prefect artifacts hold the report), said loudly
        get_run_logger().warning("the drift report was not logged to W&B (%s); the verdict is emitted anyway", exc)
