"""Operators' command line for the model registry (stages are aliases: candidate -> staging -> production).

    python -m flows.registry promote churn-model:v3 --alias production
    python -m flows.registry list churn-model
    python -m flows.registry show churn-model:production
    python -m flows.registry announce          # re-send queued announcements (local registry)

The registry is the block named by --registry-block or $MODELOPS_REGISTRY_BLOCK, else the local
registry in $MODELOPS_HOME/registry, which announces alias changes to $MODELOPS_RECEIVER_URL.
Exit 0 on success, 2 on a bad reference, an unknown version or W&B refusing the key (the message names
it), 1 otherwise (W&B unreachable, a queued announcement).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.registry", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry-block", help="saved registry block (type-slug/name or name)")
    sub = p.add_subparsers(dest="command", required=True)
    promote = sub.add_parser("promote", help="give a version an alias (its previous holder loses it)")
    promote.add_argument("model", help="<collection>:<version or alias>, e.g. churn-model:v3")
    promote.add_argument("--alias", default="production")
    listing = sub.add_parser("list", help="versions of a collection with their aliases")
    listing.add_argument("collection")
    show = sub.add_parser("show", help="one version as JSON")
    show.add_argument("model")
    sub.add_parser("announce", help="re-send queued alias announcements")
    args = p.parse_args(argv)

    from blocks.registry import RegistryError, parse_model_ref
    from blocks.wandb import WandbConfigError, WandbError
    from flows.retrain import resolve_registry

    try:
        registry = resolve_registry(args.registry_block)
        if args.command == "promote":
            collection, ref = parse_model_ref(args.model)
            mv = registry.set_alias(collection, ref, args.alias)
            print(json.dumps(mv.to_dict(), indent=2, default=str))
            if not mv.announced:
                print(f"warning: {args.alias} moved to {collection}:{mv.version}, but the receiver did not take the "
                      "announcement; it stays queued (run `python -m flows.registry announce`)", file=sys.stderr)
        elif args.command == "list":
            for mv in registry.versions(args.collection):
                metrics = mv.metadata.get("metrics", {})
                shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in ("accuracy", "f1", "roc_auc"))
                print(f"{mv.collection}:{mv.version}\t{','.join(mv.aliases) or '-'}\t{shown}")
        elif args.command == "show":
            collection, ref = parse_model_ref(args.model)
            print(json.dumps(registry.get(collection, ref).to_dict(), indent=2, default=str))
        else:
            left = registry.announce_pending()
            print(f"{left} announcement(s) still queued" if left else "all announcements delivered")
            return 1 if left else 0
    except (RegistryError, ValueError, WandbConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WandbError as exc:  # W&B down or failing: nothing changed, try again
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
