"""What happened to a dataset version, written on the version itself (its metadata, and the alias
`drifted`), so the registry alone answers "what happened to this version":

- drift-check writes `drift` (verdict, drifted features, label shift, reference, when, the run) on the
  checked version, and gives a drifted version the alias `drifted` (one holder per collection, as in
  W&B: the latest drifted version);
- retrain writes `retrain` (the model, registered version or the refusal's stage and reasons, when,
  the run) on the version it trained on. A refused candidate never becomes a model version (nothing to
  promote by mistake): its reasons live here and in `modelops.model.rejected`.

Datasets of the embedded stack live in the local registry (`local/wandb-registry-<name>/<collection>:<v>`),
W&B datasets are artifacts (`entity/project/name:v`); a plain file has no version to write on.
Best effort: a note that cannot be written is a warning, never a changed verdict.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = ["note_on_dataset"]


def _run_note() -> dict[str, Any]:
    note: dict[str, Any] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        from flows.outcomes import run_link

        name, url = run_link()
        note.update(run=url, run_name=name)
    except Exception:  # noqa: BLE001 - outside a run
        pass
    return note


def note_on_dataset(ref: str, key: str, note: dict[str, Any], *, alias: str | None = None,
                    wandb: Any = None) -> str | None:
    """Write `{key: note + when/run}` on the dataset version `ref` (and `alias` to it). Returns where it
    was written, or None when `ref` is not a registry or W&B version (or writing failed: logged)."""
    from flows.drift_data import LOCAL_ENTITY, WANDB_PREFIX, classify_ref, parse_wandb_ref
    from flows.outcomes import run_logger

    logger = run_logger("modelops.datasets")
    patch = {key: {**note, **_run_note()}}
    body = ref[len(WANDB_PREFIX):] if ref.startswith(WANDB_PREFIX) else ref
    parts = body.split("/")
    try:
        if len(parts) == 3 and parts[0] == LOCAL_ENTITY and parts[1].startswith("wandb-registry-"):
            from blocks.registry import LocalRegistry

            collection, _, version = parts[2].rpartition(":")
            registry = LocalRegistry(entity=LOCAL_ENTITY, registry=parts[1][len("wandb-registry-"):])
            mv = registry.update_metadata(collection, version, patch)
            if alias:
                registry.set_alias(collection, mv.version, alias)
            return mv.path
        if classify_ref(ref) != "wandb":
            return None
        from blocks.wandb import WandbCredentials

        creds = wandb or WandbCredentials.from_env()
        if creds is None:
            return None
        path = str(parse_wandb_ref(ref, creds.entity, creds.project))
        artifact = creds.get_api().artifact(path)
        artifact.metadata = {**dict(artifact.metadata or {}), **patch}
        if alias and alias not in artifact.aliases:
            artifact.aliases.append(alias)
        artifact.save()
        return path
    except Exception as exc:  # noqa: BLE001 - the verdict stands; the note is said to be missing
        logger.warning("could not write %s on dataset %s: %s", key, ref, exc)
        return None
