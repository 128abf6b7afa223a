"""W&B webhook bodies shared by the tests of every path that turns them into Prefect events.

`SAMPLE_BODIES` are deliveries `deployments.wandb_events.parse_body` accepts: `(id, body)` pairs,
the id kept outside the body so it can serve as a pytest parametrize id. Together they cover every
W&B `event_type` of `EVENT_NAMES`, the flat payload template and the GitHub `repository_dispatch`
shape (`{"event_type": ..., "client_payload": {...}}`, whose fields win), alias/tag present,
absent and blank, an alias instead of `vN` in `artifact_version_string`, and strings that must be
JSON-escaped (quotes, backslashes, control characters, non-ASCII, `</script>`-like markup).

`INVALID_BODIES` are deliveries it rejects: `(id, body, field)` with the `DeliveryError.field` it
names (None when the problem is the body as a whole). `body` is a JSON value, or `bytes` sent as is.
"""

from __future__ import annotations

from typing import Any

ENTITY = "acme-ml"
PROJECT = "fraud-detection"


def _artifact(event_type: str, collection: str = "fraud-model", version: str = "v3", **extra: Any) -> dict:
    """The flat payload template the W&B docs suggest for artifact events."""
    body = {
        "event_type": event_type,
        "event_author": "alice",
        "artifact_version_string": f"{ENTITY}/{PROJECT}/{collection}:{version}",
        "artifact_collection_name": collection,
        "project_name": PROJECT,
        "entity_name": ENTITY,
    }
    body.update(extra)
    return body


def _dispatch(inner: dict, outer_event_type: str = "BUILD_AND_DEPLOY", **outer: Any) -> dict:
    """The GitHub repository_dispatch shape of the seed recipe."""
    return {"event_type": outer_event_type, **outer, "client_payload": inner}


SAMPLE_BODIES: list[tuple[str, dict[str, Any]]] = [
    # --- artifact events, flat payload template
    ("add-alias", _artifact("ADD_ARTIFACT_ALIAS", alias="production")),
    ("update-alias", _artifact("UPDATE_ARTIFACT_ALIAS", alias="staging")),
    ("link-artifact", _artifact("LINK_ARTIFACT", collection="fraud-registry", version="v12")),
    ("link-model", _artifact("LINK_MODEL", alias="candidate")),
    ("create-artifact", _artifact("CREATE_ARTIFACT", collection="transactions", version="v0")),
    ("add-tag", _artifact("ADD_ARTIFACT_TAG", tag="reviewed")),
    ("alias-and-tag", _artifact("ADD_ARTIFACT_ALIAS", alias="production", tag="gold")),
    ("blank-alias-and-tag", _artifact("ADD_ARTIFACT_ALIAS", alias="   ", tag="")),
    ("null-alias", _artifact("ADD_ARTIFACT_ALIAS", alias=None, tag=None)),
    ("lowercase-event-type", _artifact("  add_artifact_alias ", alias="production")),
    ("padded-fields", _artifact(
        "ADD_ARTIFACT_ALIAS", alias="  production\t", entity_name=f" {ENTITY} ", project_name=f"{PROJECT}\n",
    )),
    ("version-is-alias", _artifact("ADD_ARTIFACT_ALIAS", version="production", alias="production")),
    ("version-is-latest", {
        "event_type": "CREATE_ARTIFACT",
        "artifact_version_string": f"{ENTITY}/{PROJECT}/transactions:latest",
    }),
    ("only-version-string", {
        "event_type": "LINK_ARTIFACT",
        "artifact_version_string": f"{ENTITY}/{PROJECT}/fraud-model:v7",
    }),
    ("short-version-string", {
        "event_type": "ADD_ARTIFACT_TAG",
        "artifact_version_string": "fraud-model:v2",
        "entity_name": ENTITY,
        "project_name": PROJECT,
        "tag": "reviewed",
    }),
    ("explicit-fields-win", _artifact(
        "ADD_ARTIFACT_ALIAS", alias="production",
        artifact_version_string="old-team/old-project/old-name:v9",
    )),
    ("numeric-alias", _artifact("ADD_ARTIFACT_ALIAS", alias=2024)),
    ("extra-nested-fields", _artifact(
        "CREATE_ARTIFACT",
        artifact_version={"id": "QXJ0aWZhY3Q6MTIz", "size": 1048576, "digest": None, "ok": True},
        metadata=[1, 2.5, {"k": [None, False]}],
        score=0.9375,
    )),
    # --- strings that must be JSON-escaped
    ("quotes-backslashes", _artifact(
        "ADD_ARTIFACT_ALIAS",
        collection='model "quoted" \\ back\\slash',
        alias='prod"uction\\',
        event_author="O'Brien \\\\server\\share",
    )),
    ("unicode", _artifact(
        "ADD_ARTIFACT_TAG",
        collection="modèle-de-fraude-日本語",
        tag="✓ réviśed 🚀",
        entity_name="équipe",
        note="smart “quotes” and zero\u200bwidth",
    )),
    ("control-and-markup", _artifact(
        "LINK_MODEL",
        alias="line\nbreak\ttab",
        note="</script><script>alert('x')</script> & \u0000 \u001f \u2028 \u2029",
    )),
    # --- repository_dispatch shape
    ("dispatch-add-alias", _dispatch(_artifact("ADD_ARTIFACT_ALIAS", alias="production"))),
    ("dispatch-create", _dispatch(_artifact("CREATE_ARTIFACT", collection="transactions", version="v41"))),
    ("dispatch-tag", _dispatch(_artifact("ADD_ARTIFACT_TAG", tag="reviewed"), outer_event_type="ADD_ARTIFACT_TAG")),
    ("dispatch-inner-wins", _dispatch(
        _artifact("LINK_ARTIFACT", collection="registry-model", version="v5"),
        outer_event_type="CREATE_ARTIFACT",
        entity_name="outer-entity", alias="outer-alias", ref="main",
    )),
    ("dispatch-outer-fields-kept", _dispatch(
        {"event_type": "ADD_ARTIFACT_ALIAS", "artifact_version_string": f"{ENTITY}/{PROJECT}/fraud-model:v3"},
        outer_event_type="BUILD_AND_DEPLOY", alias="production", tag="from-outer",
    )),
    ("dispatch-no-inner-event-type", {
        "event_type": "CREATE_ARTIFACT",
        "client_payload": {"artifact_version_string": f"{ENTITY}/{PROJECT}/transactions:v8", "rows": 1200},
    }),
    ("dispatch-nested-client-payload", _dispatch(_artifact(
        "ADD_ARTIFACT_ALIAS", alias="production",
        client_payload={"event_type": "CREATE_ARTIFACT", "deeper": {"x": "y"}},
    ))),
    ("dispatch-null-client-payload", {**_artifact("CREATE_ARTIFACT"), "client_payload": None}),
    ("dispatch-empty-client-payload", {**_artifact("ADD_ARTIFACT_TAG", tag="t"), "client_payload": {}}),
    ("dispatch-escaping", _dispatch(_artifact(
        "ADD_ARTIFACT_ALIAS", alias='a "b" \\ c ü', collection="weird\\name",
    ))),
    # --- run events
    ("run-metric", {
        "event_type": "RUN_METRIC", "entity_name": ENTITY, "project_name": PROJECT,
        "run_id": "3x9k2a1b", "run_name": "sunny-river-42", "metric_name": "val/auc", "metric_value": 0.912,
    }),
    ("run-metric-change", {
        "event_type": "RUN_METRIC_CHANGE", "entity_name": ENTITY, "project_name": PROJECT,
        "run_id": "3x9k2a1b", "metric_name": "val/loss", "metric_value": "0.25",
    }),
    ("run-metric-zscore", {
        "event_type": "RUN_METRIC_ZSCORE", "entity_name": ENTITY, "project_name": PROJECT,
        "run_name": "zesty-zebra-7", "metric_name": "latency_ms", "metric_value": 3,
    }),
    ("run-state", {
        "event_type": "RUN_STATE", "entity_name": ENTITY, "project_name": PROJECT,
        "run_id": "abc123", "run_name": "", "run_state": "finished",
    }),
    ("run-bare", {"event_type": "RUN_STATE"}),
    ("run-project-only", {"event_type": "RUN_METRIC", "project_name": PROJECT, "metric_value": -1.5e-07}),
    ("run-ignores-artifact-fields", {
        "event_type": "run_metric", "run_id": "r1", "alias": ["not", "read"], "tag": {"nor": "this"},
        "artifact_version_string": "garbage",
    }),
    ("run-unicode", {
        "event_type": "RUN_METRIC", "entity_name": ENTITY, "project_name": PROJECT,
        "run_name": 'ränn "42" \\ 🏃', "metric_name": "précision", "metric_value": 1,
    }),
    ("dispatch-run-metric", _dispatch({
        "event_type": "RUN_METRIC", "entity_name": ENTITY, "project_name": PROJECT,
        "run_id": "3x9k2a1b", "metric_name": "val/auc", "metric_value": 0.5,
    })),
]

INVALID_BODIES: list[tuple[str, Any, str | None]] = [
    ("unknown-event-type", _artifact("DELETE_ARTIFACT"), "event_type"),
    ("dispatch-unknown-event-type", _dispatch({"artifact_version_string": "a/b/c:v1"}), "event_type"),
    ("missing-event-type", {"artifact_version_string": "a/b/c:v1"}, "event_type"),
    ("null-event-type", {"event_type": None}, "event_type"),
    ("empty-event-type", {"event_type": ""}, "event_type"),
    ("blank-event-type", {"event_type": "   "}, "event_type"),
    ("numeric-event-type", {"event_type": 7}, "event_type"),
    ("list-client-payload", {"event_type": "CREATE_ARTIFACT", "client_payload": ["x"]}, "client_payload"),
    ("string-client-payload", {"event_type": "CREATE_ARTIFACT", "client_payload": "{}"}, "client_payload"),
    ("missing-version-string", {"event_type": "ADD_ARTIFACT_ALIAS", "alias": "production"}, "artifact_version_string"),
    ("blank-version-string", _artifact("CREATE_ARTIFACT", artifact_version_string="  "), "artifact_version_string"),
    ("version-string-no-colon", _artifact("CREATE_ARTIFACT", artifact_version_string="a/b/c"), "artifact_version_string"),
    ("version-string-empty-version", _artifact("CREATE_ARTIFACT", artifact_version_string="a/b/c:"), "artifact_version_string"),
    ("version-string-two-parts", _artifact("CREATE_ARTIFACT", artifact_version_string="a/c:v1"), "artifact_version_string"),
    ("version-string-empty-part", _artifact("CREATE_ARTIFACT", artifact_version_string="a//c:v1"), "artifact_version_string"),
    ("version-string-slash-in-version", _artifact("CREATE_ARTIFACT", artifact_version_string="a/b/c:v1/x"), "artifact_version_string"),
    ("version-string-is-object", _artifact("CREATE_ARTIFACT", artifact_version_string={"v": 1}), "artifact_version_string"),
    ("missing-entity", {"event_type": "CREATE_ARTIFACT", "artifact_version_string": "c:v1", "project_name": "p"}, "entity_name"),
    ("missing-project", {"event_type": "CREATE_ARTIFACT", "artifact_version_string": "c:v1", "entity_name": "e"}, "project_name"),
    ("bool-entity", _artifact("CREATE_ARTIFACT", entity_name=True), "entity_name"),
    ("list-alias", _artifact("ADD_ARTIFACT_ALIAS", alias=["production"]), "alias"),
    ("object-tag", _artifact("ADD_ARTIFACT_TAG", tag={"name": "x"}), "tag"),
    ("missing-project-before-bad-alias", {
        "event_type": "ADD_ARTIFACT_ALIAS", "artifact_version_string": "c:v1", "entity_name": "e", "alias": [1],
    }, "project_name"),
    ("run-list-metric-value", {"event_type": "RUN_METRIC", "metric_value": [0.9]}, "metric_value"),
    ("run-bool-run-id", {"event_type": "RUN_STATE", "run_id": False, "run_state": {"x": 1}}, "run_id"),
    ("body-is-list", [{"event_type": "CREATE_ARTIFACT"}], None),
    ("body-is-string", "CREATE_ARTIFACT", None),
    ("body-not-json", b"event_type=CREATE_ARTIFACT&artifact_version_string=a/b/c:v1", None),
]
