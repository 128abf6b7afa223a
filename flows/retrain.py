"""retrain: drift or a metric alert -> train -> gate against production -> register as `candidate`.

Triggered by `modelops.drift.detected` and by `wandb.run.metric` (see prefect.yaml); one retrain per
model at a time (deployment concurrency limit 1; a second trigger while one runs is queued, not
dropped: the newer data deserves its own run). Also runs ad hoc:

    python -m flows.retrain --dataset data/churn.parquet [--model churn-model] [--target churned]

The trainer (`LocalTrainer` by default, `VertexAITrainer`), the registry (`LocalRegistry` by default,
`WandbRegistry`) come from blocks; the gate is `flows.gate.evaluate_gate` (pure).
"""


import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.training import TrainingResult
from blocks.wandb import WandbConfigError, retry_if_unavailable
from flows.gate import GatePolicy, GateVerdict, evaluate_gate
from flows.outcomes import decision, one_line, run_flow, run_link
from flows.status_board import record_retrain

DEFAULT_MODEL = "churn-model"
DEFAULT_TARGET = "churned"


# ------------------------------------------------------------------------------------ blocks


def load_block(name: str, kinds: list[type]) -> Any:
    """A saved block by `type-slug/name`, or by bare name among `kinds`; a clear error otherwise."""
    from prefect.blocks.core import Block

    if "/" in name:
        return Block.load(name)
    for kind in kinds:
        try:
            return kind.load(name)
        except ValueError:
            continue
    slugs = ", ".join(k.get_block_type_slug() for k in kinds)
    raise ValueError(f"no block named {name!r} of type {slugs}; save one or pass 'type-slug/name'")


def resolve_trainer(name: str | None) -> Any:
    """The named trainer block ($MODELOPS_TRAINER_BLOCK), else the local trainer."""
    from blocks.local import LocalTrainer

    name = name or os.environ.get("MODELOPS_TRAINER_BLOCK")
    if not name:
        return LocalTrainer()
    if name.startswith("local-trainer/"):  # no Vertex AI SDK import on the local path
        return LocalTrainer.load(name.split("/", 1)[1])
    from blocks.vertex import VertexAITrainer

    return load_block(name, [LocalTrainer, VertexAITrainer])


def resolve_registry(name: str | None) -> Any:
    """The named registry block ($MODELOPS_REGISTRY_BLOCK), else the local registry."""
    from blocks.registry import LocalRegistry, WandbRegistry

    name = name or os.environ.get("MODELOPS_REGISTRY_BLOCK")
    return load_block(name, [LocalRegistry, WandbRegistry]) if name else LocalRegistry()


def model_resource(registry: Any, collection: str, version: str | None = None) -> dict[str, str]:
    """The model as a Prefect resource, named like W&B names registry artifacts."""
    entity = getattr(registry, "entity", None) or getattr(registry, "org", "local")
    project = f"wandb-registry-{registry.registry}"
    name = f"{collection}:{version}" if version else collection
    resource = {"prefect.resource.id": f"wandb.artifact.{entity}/{project}/{name}", "prefect.resource.name": name,
                "wandb.entity": entity, "wandb.project": project, "wandb.collection": collection}
    if version:
        resource["wandb.version"] = version
    return resource


# ------------------------------------------------------------------------------------ tasks


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(trainer: Any, dataset: str, hyperparameters: dict[str, Any], target: str) -> TrainingResult:
    logger = get_run_logger()
    result = trainer.train(dataset, hyperparameters, target=target, log=logger.info)
    logger.info("trained %s (%s): %s", result.job, result.model_uri,
                ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if not k.startswith("n")))
    return result


@task(name="fetch-production-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 15],
      retry_condition_fn=retry_if_unavailable)
def fetch_model_file(registry: Any, version: Any) -> str:
    """The production model's file, local (downloaded from W&B for a `WandbRegistry`), so the gate
    scores it on the same rows as the candidate instead of trusting its recorded metrics."""
    return registry.download(version)


def _wandb_for(dataset: str, wandb_block: str | None) -> Any:
    from flows.drift_data import classify_ref

    if classify_ref(dataset) != "wandb":
        return None
    from blocks.wandb import WandbCredentials

    return WandbCredentials.load(wandb_block) if wandb_block else WandbCredentials.from_env()


def load_checked(dataset: str, target: str, options: dict[str, Any] | None, wandb_block: str | None,
                 schema: dict[str, str] | None = None, against: str = "the reference") -> tuple[Any, Any]:
    """The dataset as the data contract keeps it, and the contract's report."""
    from flows.data_contract import ContractOptions, check_table
    from flows.drift_data import load_table

    return check_table(load_table(dataset, wandb=_wandb_for(dataset, wandb_block)), target=target, schema=schema,
                       against=against, options=ContractOptions.from_mapping(options), what=f"dataset {dataset}")


@task(name="check-data-contract", cache_policy=NO_CACHE)
def check_data_contract(model: str, dataset: str, target: str, options: dict[str, Any] | None,
                        wandb_block: str | None, production: Any, production_file: str | None) -> Any:
    """The contract on the dataset, against the production model's schema when there is one (so a
    dataset production cannot be scored on is refused before training, saying so); published as the
    table artifact `data-contract-<model>`."""
    from flows.data_contract import schema_of
    from training.tabular import ModelFileError, load_model

    logger = get_run_logger()
    schema, against = None, "the reference"
    if production is not None and production_file:
        try:
            schema = schema_of(load_model(production_file))
            against = f"production model {model}:{production.version}"
        except (ModelFileError, OSError) as exc:
            logger.warning("production model not loadable here (%s): its schema is not checked", exc)
    _, report = load_checked(dataset, target, options, wandb_block, schema, against)
    for warning in report.warnings:
        logger.warning("data contract: %s", warning)
    create_table_artifact(key=f"data-contract-{_key(model)}", table=report.rows_table(),
                          description=f"Data contract of {dataset} for {model}: "
                                      f"{'REFUSED' if not report.ok else 'passed'}. {report.summary()}")
    logger.info("data contract: %s", report.summary())
    return report


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate_models(result: TrainingResult, production: Any, dataset: str, target: str,
                    holdout_fraction: float, seed: int, wandb_block: str | None,
                    production_file: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score the candidate and the production model on the same held-out rows of `dataset`.

    Models that cannot be loaded here (e.g. a Vertex AI model in Cloud Storage without the gcs extra)
    are judged by the metrics recorded with them, and the verdict says so.
    """
    from training.tabular import ModelFileError, load_model, score, split

    logger = get_run_logger()
    table, report = load_checked(dataset, target, options, wandb_block)
    report.raise_for_errors()
    _, holdout = split(table, target, holdout_fraction, seed)
    out: dict[str, Any] = {"holdout_rows": len(holdout), "basis": {}}

    def judge(label: str, uri: str, recorded: dict[str, float]) -> dict[str, float]:
        try:
            metrics = score(load_model(uri), holdout)
            out["basis"][label] = f"scored on {len(holdout)} held-out rows"
        except (ModelFileError, OSError) as exc:
            logger.warning("%s model not loadable here (%s): using its recorded metrics", label, exc)
            metrics = dict(recorded)
            out["basis"][label] = "recorded metrics (model not loadable here)"
        return metrics

    out["candidate"] = judge("candidate", result.model_uri, result.metrics)
    out["production"] = None
    if production is not None:
        out["production"] = judge("production", production_file or production.uri,
                                  production.metadata.get("metrics", {}))
    return out


def publish_verdict(model: str, verdict: GateVerdict, evaluation: dict[str, Any], production: Any) -> None:
    rows = [{**r, "candidate": _num(r["candidate"]), "reference": _num(r["reference"]), "limit": _num(r["limit"])}
            for r in verdict.rows()]
    create_table_artifact(key=f"gate-{_key(model)}", table=rows,
                          description=f"Evaluation gate for {model}: {'PASSED' if verdict.passed else 'REJECTED'}")
    names = sorted(set(evaluation["candidate"]) | set(evaluation.get("production") or {}))
    prod = evaluation.get("production") or {}
    table = "\n".join(f"| {n} | {_num(evaluation['candidate'].get(n))} | {_num(prod.get(n)) if prod else '-'} |"
                      for n in names if n != "n")
    create_markdown_artifact(
        key=f"retrain-{_key(model)}",
        markdown=(f"# Retrain of `{model}`: {'passed' if verdict.passed else '**rejected**'}\n\n{verdict.reason}\n\n"
                  f"| metric | candidate | production{f' ({production.version})' if production else ''} |\n"
                  f"|---|---|---|\n{table}\n\nBasis: "
                  + "; ".join(f"{k}: {v}" for k, v in evaluation["basis"].items()) + "\n"),
        description=f"Gate verdict for {model}",
    )


def _num(x: Any) -> Any:
    return float(f"{x:.6g}") if isinstance(x, float) else x


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


@task(name="register-candidate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_candidate(registry: Any, model: str, result: TrainingResult, metadata: dict[str, Any]) -> Any:
    return _register(registry, model, result, metadata, "candidate")


@task(name="register-refused", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_refused(registry: Any, model: str, result: TrainingResult, metadata: dict[str, Any]) -> Any:
    """Keep the model the gate refused as a version with the alias `refused` (never `candidate`) and its
    reasons in the metadata (`refused`), so the registry alone says what happened to it."""
    return _register(registry, model, result, metadata, "refused")


def _register(registry: Any, model: str, result: TrainingResult, metadata: dict[str, Any], alias: str) -> Any:
    existing = _already_registered(registry, model, result.job)
    if existing is not None:  # a retry after the write landed
        return existing
    mv = registry.register(model, _local_file(result.model_uri), metadata=metadata, aliases=[alias])
    if not mv.announced:
        get_run_logger().warning("registered %s:%s, but its announcement is queued: the receiver did not take it "
                                 "(it is re-sent by the next registry call or `python -m flows.registry announce`)",
                                 model, mv.version)
    return mv


def _already_registered(registry: Any, model: str, job: str) -> Any:
    try:
        versions = registry.versions(model)
    except Exception:  # noqa: BLE001 - a registry that cannot list simply gets no shortcut
        return None
    return next((v for v in versions if v.metadata.get("training_job") == job), None)


def _local_file(uri: str) -> str:
    if uri.startswith("gs://") or "://" in uri:
        import fsspec

        local = Path(os.environ.get("MODELOPS_HOME", ".modelops")).resolve() / "downloads" / Path(uri.rstrip("/")).name
        local.parent.mkdir(parents=True, exist_ok=True)
        src = uri if not uri.endswith("/") else uri + "model.joblib"
        with fsspec.open(src, "rb") as fin, open(local, "wb") as fout:
            fout.write(fin.read())
        return str(local)
    return uri


# ------------------------------------------------------------------------------------ flow


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"retrain-{params.get('model') or DEFAULT_MODEL}-{params.get('reason') or 'manual'}"


@flow(name="retrain", flow_run_name=_run_name, log_prints=True)
def retrain(
    dataset: str,
    reason: str = "manual",
    model: str = DEFAULT_MODEL,
    target: str = DEFAULT_TARGET,
    hyperparameters: dict[str, Any] | None = None,
    floors: dict[str, float] | None = None,
    max_regression: float = 0.01,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    trainer_block: str | None = None,
    registry_block: str | None = None,
    wandb_block: str | None = None,
    event_id: str | None = None,
    data_options: dict[str, Any] | None = None,
    compare_production: bool = True,
) -> Any:
    """Train `model` on `dataset`, gate it against production, register it as `candidate` if it passes.

    The dataset is held to the data contract first (`flows.data_contract`; `data_options`:
    coerce_numeric, drop_high_cardinality, max_categories), against the production model's schema.
    `compare_production=False` gates on the floors alone (a model meant to replace production with
    different features). A registered candidate ends `Registered` (Completed); a refusal - by the
    contract or by the gate - ends in a Failed state named `Refused` and the event
    `modelops.model.rejected` with the reasons (`stage`: data-contract | gate); an error stays a plain
    Failed (or Crashed) run (`flows.outcomes`)."""
    logger = get_run_logger()
    logger.info("retrain of %s on %s (reason: %s)", model, dataset, reason)
    if not dataset:
        raise ValueError("no dataset to train on: pass `dataset` (set the deployment's default for metric alerts)")
    policy = GatePolicy(**({"floors": floors} if floors is not None else {}), max_regression=max_regression)
    from flows.data_contract import OPTION_KEYS, ContractOptions

    options = dict(data_options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"data_options: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYS)}")
    ContractOptions.from_mapping(options)  # bad values fail here, naming the option
    hp = {**(hyperparameters or {}), **options, "holdout_fraction": holdout_fraction, "seed": seed}

    trainer = resolve_trainer(trainer_block)
    registry = resolve_registry(registry_block)
    production = registry.find(model, "production")
    logger.info("production model: %s", f"{model}:{production.version}" if production else "none yet")
    if production is not None and not compare_production:
        logger.warning("compare_production is off: %s:%s is not scored; the gate checks the floors only", model,
                       production.version)
        production = None
    production_file = fetch_model_file(registry, production) if production is not None else None

    contract = check_data_contract(model, dataset, target, options, wandb_block, production, production_file)
    if not contract.ok:
        reasons = list(contract.errors)
        summary = {"model": model, "dataset": dataset, "reason": reason, "passed": False, "refused": "data-contract",
                   "data_contract": reasons, "registered": None,
                   "production_version": production.version if production else None}
        if any("production model" in r for r in reasons):
            summary["hint"] = ("production cannot be scored on this dataset: restore its columns, or retrain with "
                               "compare_production=False (--no-compare-production) to gate on the floors alone")
        logger.error("refused by the data contract: %s", contract.summary())
        log_contract_to_wandb(registry, wandb_block, dataset, model, contract)
        emit_event(event="modelops.model.rejected", resource=model_resource(registry, model),
                   related=_related(dataset), payload={**summary, "stage": "data-contract", "reasons": reasons})
        record_retrain(model, summary, "Refused", registry)
        _note(dataset, wandb_block, {"model": model, "outcome": "refused", "stage": "data-contract", "reasons": reasons})
        return decision("Refused", success=False, message=f"data contract: {contract.summary()}", data=summary)

    result = train_model(trainer, dataset, hp, target)
    evaluation = evaluate_models(result, production, dataset, target, holdout_fraction, seed, wandb_block,
                                 production_file, options)
    verdict = evaluate_gate(evaluation["candidate"], evaluation["production"], policy)
    logger.info("gate %s", verdict.reason)
    publish_verdict(model, verdict, evaluation, production)

    summary: dict[str, Any] = {
        "model": model, "dataset": dataset, "reason": reason, "passed": verdict.passed, "gate": verdict.reason,
        "metrics": evaluation["candidate"], "production_version": production.version if production else None,
        "production_metrics": evaluation["production"], "training_job": result.job, "trainer": result.trainer,
    }
    metadata = {"metrics": evaluation["candidate"], "dataset": dataset, "reason": reason, "training_job": result.job,
                "trainer": result.trainer, "model_uri": result.model_uri, "gate": verdict.to_dict(),
                "hyperparameters": hp, "target": target, "trigger_event_id": event_id,
                "data_contract": {"summary": contract.summary(), "columns": contract.rows_table()}}
    if not verdict.passed:
        name, url = run_link()
        try:  # best effort: the refusal is the outcome, its record in the registry a courtesy
            kept = register_refused(registry, model, result, {**metadata, "refused": {
                "stage": "gate", "reasons": [verdict.reason], "at": datetime.now(timezone.utc).isoformat(),
                "run": name, "run_url": url}})
            logger.info("kept the refused model as %s:%s (alias refused)", model, kept.version)
        except Exception as exc:  # noqa: BLE001 - reported; the refusal stands
            logger.warning("the refused model was not kept in the registry: %s", one_line(exc))
            kept = None
        summary["refused_version"] = kept.version if kept is not None else None
        emit_event(event="modelops.model.rejected", resource={**model_resource(registry, model),
                                                              "modelops.training.job": result.job},
                   related=_related(dataset), payload={**summary, "checks": verdict.rows(), "stage": "gate",
                                                       "reasons": [verdict.reason]})
        record_retrain(model, summary, "Refused", registry)
        _note(dataset, wandb_block, {"model": model, "outcome": "refused", "stage": "gate", "reasons": [verdict.reason],
                                     "metrics": evaluation["candidate"], "training_job": result.job,
                                     "version": summary["refused_version"]})
        return decision("Refused", success=False, message=f"gate: {verdict.reason}",
                        data={**summary, "refused": "gate", "registered": None})

    mv = register_candidate(registry, model, result, metadata)
    logger.info("registered %s:%s as candidate", model, mv.version)
    emit_event(event="modelops.model.registered", resource=model_resource(registry, model, mv.version),
               related=_related(dataset),
               payload={**summary, "version": mv.version, "aliases": list(mv.aliases), "path": mv.path})
    record_retrain(model, {**summary, "registered": mv.version}, "Registered", registry)
    _note(dataset, wandb_block, {"model": model, "outcome": "registered", "version": mv.version, "path": mv.path})
    return decision("Registered", success=True, message=f"{model}:{mv.version} registered as candidate; {verdict.reason}",
                    data={**summary, "registered": mv.version, "aliases": list(mv.aliases), "path": mv.path})


def log_contract_to_wandb(registry: Any, wandb_block: str | None, dataset: str, model: str, contract: Any) -> None:
    """A refusal by the data contract, as a W&B run (job type `retrain`, table `data_contract`, summary
    `data_contract: refused` with the problems) where W&B is in use: the registry's credentials, the
    `wandb_block`, or the environment's key for a W&B dataset. Best effort: the refusal stands whatever
    W&B answers (the Prefect artifact holds the same table)."""
    from blocks.wandb import WandbCredentials
    from flows.drift_check import log_contract
    from flows.drift_data import classify_ref

    creds = getattr(registry, "credentials", None)
    if creds is None and wandb_block:
        creds = WandbCredentials.load(wandb_block)
    if creds is None and classify_ref(dataset) == "wandb":
        creds = WandbCredentials.from_env()
    if creds is None:
        return
    logger = get_run_logger()
    try:
        run = creds.init_run(job_type="retrain", config={"model": model, "dataset": dataset})
        try:
            log_contract(run, contract.rows_table(), contract.errors)
        finally:
            run.finish()
        logger.info("the data contract's refusal is logged to W&B: %s", getattr(run, "path", run.id))
    except Exception as exc:  # noqa: BLE001 - the refusal stands; W&B's answer is only reported
        logger.warning("the data contract's refusal was not logged to W&B: %s", exc)


def _note(dataset: str, wandb_block: str | None, note: dict[str, Any]) -> None:
    """The retrain's outcome on the dataset version it trained on (`flows.dataset_notes`), best effort."""
    from flows.dataset_notes import note_on_dataset

    try:
        creds = _wandb_for(dataset, wandb_block)
    except Exception:  # noqa: BLE001 - no W&B credentials: a W&B dataset gets no note
        creds = None
    note_on_dataset(dataset, "retrain", note, wandb=creds)


def _related(dataset: str) -> list[dict[str, str]]:
    from flows.drift_check import dataset_resource

    r = dataset_resource(dataset)
    return [{"prefect.resource.id": r["prefect.resource.id"], "prefect.resource.name": r["prefect.resource.name"],
             "prefect.resource.role": "dataset"}]


# ------------------------------------------------------------------------------------ CLI


def _floor(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"floor {text!r} must look like metric=value, e.g. accuracy=0.85") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.retrain", description=retrain.__doc__)
    p.add_argument("--dataset", required=True, help="local path, gs:// URL or W&B artifact entity/project/name:alias")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registry collection (default {DEFAULT_MODEL})")
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"label column (default {DEFAULT_TARGET})")
    p.add_argument("--reason", default="manual")
    p.add_argument("--params", default="{}", help="hyperparameters as JSON")
    p.add_argument("--floor", action="append", type=_floor, help="metric=value (repeatable; default accuracy=0.85 f1=0.80)")
    p.add_argument("--max-regression", type=float, default=0.01)
    p.add_argument("--trainer-block", help="saved trainer block (type-slug/name or name)")
    p.add_argument("--registry-block", help="saved registry block (type-slug/name or name)")
    p.add_argument("--coerce-numeric", action="store_true",
                   help="read non-numeric cells of numeric columns as missing (counted) instead of refusing the data")
    p.add_argument("--drop-high-cardinality", action="store_true",
                   help="drop id / free-text columns (reported) instead of refusing the data")
    p.add_argument("--no-compare-production", action="store_true",
                   help="gate on the floors alone, without scoring the production model (e.g. its features are gone)")
    args = p.parse_args(argv)
    try:
        params = json.loads(args.params)
    except ValueError as exc:
        print(f"error: --params is not valid JSON ({exc}); pass an object such as "
              f"'{{\"model\": \"random_forest\"}}'", file=sys.stderr)
        return 2
    if not isinstance(params, dict):
        print(f"error: --params must be a JSON object of hyperparameters, got {type(params).__name__}: {args.params}",
              file=sys.stderr)
        return 2
    options = {k: True for k, on in (("coerce_numeric", args.coerce_numeric),
                                     ("drop_high_cardinality", args.drop_high_cardinality)) if on}
    try:
        GatePolicy(**({"floors": dict(args.floor)} if args.floor else {}), max_regression=args.max_regression)
        from training.tabular import _estimator

        _estimator({k: v for k, v in params.items() if k not in ("holdout_fraction", "seed")})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from flows._cli import prepare_prefect_env

    prepare_prefect_env()
    try:
        result = run_flow(retrain, dataset=args.dataset, reason=args.reason, model=args.model, target=args.target,
                         hyperparameters=params, floors=dict(args.floor) if args.floor else None,
                         max_regression=args.max_regression, trainer_block=args.trainer_block,
                         registry_block=args.registry_block, data_options=options or None,
                         compare_production=not args.no_compare_production)
    except (FileNotFoundError, WandbConfigError, ValueError) as exc:  # bad input or settings: the message names them
        print(f"retrain failed: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI reports, the flow run keeps the traceback
        from blocks.training import TrainingError

        if isinstance(exc, TrainingError) and "exit code 2" in str(exc):  # the trainer refused its input
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            print(f"retrain failed: {lines[-1].strip() if lines else exc}", file=sys.stderr)
            return 2
        print(f"retrain failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    if result.get("refused") == "data-contract":
        print(f"retrain refused: the data contract: {'; '.join(result['data_contract'])}"
              + (f" ({result['hint']})" if result.get("hint") else ""), file=sys.stderr)
        return 2
    if result.get("refused") == "gate":
        print(f"retrain refused by the gate: {result['gate']}", file=sys.stderr)
        return 3
    return 0


def _one_line(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
