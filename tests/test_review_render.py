"""Rendering the promotion review issue: the real template, front matter rules and the issue marker.

Pure functions, no Prefect and no I/O apart from reading the repository's template file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.review_render import (
    DEFAULT_PROJECT,
    Promotion,
    RenderedIssue,
    TemplateProblem,
    issue_marker,
    render_issue,
)

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "templates" / "promotion_issue.md"
TEMPLATE = TEMPLATE_PATH.read_text()


def promotion(**overrides) -> Promotion:
    fields = dict(entity="acme", project="churn", collection="churn-model", version="v3", alias="production")
    fields.update(overrides)
    return Promotion(**fields)


def render(text: str, **overrides) -> RenderedIssue:
    return render_issue(text, promotion(**overrides))


def problem(text: str, **overrides) -> str:
    with pytest.raises(TemplateProblem) as info:
        render(text, **overrides)
    return str(info.value)


# =========================================================================== the real template


def test_real_template_title_labels_and_assignees() -> None:
    issue = render(TEMPLATE)
    assert "churn-model:v3" in issue.title, "the title names the artifact version under review"
    assert "production" in issue.title, "the title names the alias it received"
    assert issue.labels == ("model-review", "production"), "labelled for the review queue and by alias"
    assert issue.assignees == (), "the template assigns nobody (assignees: \"\")"


def test_real_template_body_names_the_artifact() -> None:
    p = promotion(author="alice")
    issue = render_issue(TEMPLATE, p)
    assert p.artifact_url == "https://wandb.ai/acme/churn/artifacts/model/churn-model/v3"
    assert p.artifact_url in issue.body, "the body links to the artifact in W&B"
    assert "acme/churn/churn-model:v3" in issue.body, "the body shows the version string"
    assert "`acme` / `churn`" in issue.body, "the body names entity and project"
    assert "alice" in issue.body, "the body names who promoted it"
    assert "### Metadata" not in issue.body, "no metadata given, no metadata table"
    assert "{{" not in issue.body and "{%" not in issue.body, "no template syntax is left in the issue"


def test_real_template_without_author_says_unknown() -> None:
    issue = render(TEMPLATE, author=None)
    assert "Promoted by | unknown" in issue.body, "a missing author is said to be unknown, not 'None'"
    assert "None" not in issue.body


def test_real_template_metadata_table() -> None:
    issue = render(TEMPLATE, metadata={"val_auc": 0.931, "rows": 120000, "framework": "xgboost"})
    assert "### Metadata" in issue.body, "metadata given, metadata table shown"
    for line in ("| `framework` | `xgboost` |", "| `rows` | `120000` |", "| `val_auc` | `0.931` |"):
        assert line in issue.body, f"every metadata entry is a table row: {line}"
    rows = [line for line in issue.body.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows][-3:] == ["framework", "rows", "val_auc"], "rows are sorted by key"


def test_real_template_artifact_id_row_only_when_given() -> None:
    assert "Artifact id" not in render(TEMPLATE).body
    assert "| Artifact id | `QXJ0aWZhY3Q6MTIz` |" in render(TEMPLATE, artifact_id="QXJ0aWZhY3Q6MTIz").body


def test_marker_is_the_last_line_of_the_body() -> None:
    p = promotion()
    issue = render_issue(TEMPLATE, p)
    assert issue.marker == issue_marker(p)
    assert issue.body.endswith(issue.marker + "\n"), "the hidden marker closes the body"
    assert issue.body.count(issue.marker) == 1
    assert issue.marker.startswith("<!--") and issue.marker.endswith("-->"), "the marker is an HTML comment"
    assert "wandb.artifact.acme/churn/churn-model:v3" in issue.marker, "the marker names the artifact version"


def test_marker_identifies_the_artifact_version_only() -> None:
    base = issue_marker(promotion())
    assert issue_marker(promotion(alias="staging", author="bob", metadata={"x": 1})) == base, (
        "the same version promoted again (other alias or author) must find the same issue"
    )
    assert issue_marker(promotion(version="v4")) != base, "another version gets its own issue"
    assert issue_marker(promotion(collection="other-model")) != base
    assert issue_marker(promotion(project="other")) != base
    assert issue_marker(promotion(entity="other")) != base


def test_default_project_and_version_string() -> None:
    p = Promotion(entity="acme", collection="churn-model", version="v3")
    assert p.project == DEFAULT_PROJECT == "wandb-registry-model"
    assert p.version_string == "acme/wandb-registry-model/churn-model:v3", "derived when W&B did not send one"
    assert p.resource_id == "wandb.artifact.acme/wandb-registry-model/churn-model:v3", (
        "the same resource id as the wandb.artifact.* event that triggered the review"
    )
    assert promotion(version_string="acme/churn/churn-model:production").version_string == (
        "acme/churn/churn-model:production"
    ), "a version string W&B sent is kept as given"


def test_artifact_url_respects_a_custom_wandb_host() -> None:
    p = promotion(wandb_url="https://wandb.example.com/", artifact_type="dataset")
    assert p.artifact_url == "https://wandb.example.com/acme/churn/artifacts/dataset/churn-model/v3"


# =========================================================================== front matter


def test_labels_and_assignees_as_yaml_lists() -> None:
    issue = render("---\ntitle: T\nlabels: [a, b, a, ' b ']\nassignees:\n  - alice\n  - bob\n  - alice\n---\nbody\n")
    assert issue.labels == ("a", "b"), "labels are stripped and de-duplicated, order kept"
    assert issue.assignees == ("alice", "bob"), "assignees are de-duplicated, order kept"


def test_labels_and_assignees_as_comma_separated_strings() -> None:
    issue = render("---\ntitle: T\nlabels: 'x, y,,x , z'\nassignees: alice,bob, alice\n---\nbody\n")
    assert issue.labels == ("x", "y", "z"), "empty entries dropped, duplicates removed"
    assert issue.assignees == ("alice", "bob")


def test_labels_and_assignees_absent_or_empty() -> None:
    for front in ("title: T", "title: T\nlabels:\nassignees: ''", "title: T\nlabels: []\nassignees: []"):
        issue = render(f"---\n{front}\n---\nbody\n")
        assert (issue.labels, issue.assignees) == ((), ()), f"nothing to add for {front!r}"


def test_numeric_labels_are_text() -> None:
    assert render("---\ntitle: T\nlabels: [2024, q3]\n---\nb\n").labels == ("2024", "q3")


def test_title_is_stripped_and_body_keeps_its_markdown() -> None:
    issue = render("---\ntitle: '  Review {{ collection }}  '\n---\n\n## Heading\n\n- item\n\n")
    assert issue.title == "Review churn-model"
    assert issue.body.startswith("## Heading\n\n- item"), "the body is the Markdown after the front matter"


def test_windows_line_endings() -> None:
    issue = render("---\r\ntitle: T\r\nlabels: a\r\n---\r\nbody\r\n")
    assert (issue.title, issue.labels) == ("T", ("a",)), "a template saved with CRLF still parses"


@pytest.mark.parametrize(
    "text,words",
    [
        ("title: T\n---\nbody\n", "must start with YAML front matter"),
        ("# Just markdown\n", "must start with YAML front matter"),
        ("---\ntitle: T\nbody without a closing line\n", "not closed"),
        ("---\ntitle: [unclosed\n---\nbody\n", "not valid YAML"),
        ("---\ntitle: T\n  labels: : x\n---\nbody\n", "not valid YAML"),
        ("---\n- just\n- a list\n---\nbody\n", "must be a mapping"),
        ("---\nlabels: a\n---\nbody\n", "no 'title'"),
        ("---\ntitle: '   '\n---\nbody\n", "no 'title'"),
        ("---\ntitle: T\nlabels: 5\n---\nbody\n", "'labels' must be a list or a comma-separated string"),
        ("---\ntitle: T\nlabels: {a: 1}\n---\nbody\n", "'labels' must be a list or a comma-separated string"),
        ("---\ntitle: T\nassignees: [[alice]]\n---\nbody\n", "'assignees' has a non-text entry"),
        ("---\ntitle: T\nlabels: [a, {b: 1}]\n---\nbody\n", "'labels' has a non-text entry"),
    ],
    ids=[
        "no-front-matter", "plain-markdown", "unclosed-front-matter", "invalid-yaml", "invalid-yaml-indent",
        "front-matter-not-mapping", "missing-title", "blank-title", "labels-int",
        "labels-mapping", "assignees-nested-list", "labels-mapping-entry",
    ],
)
def test_template_problems_say_what_is_wrong(text: str, words: str) -> None:
    message = problem(text)
    assert words in message, f"the error must say {words!r}, said: {message}"


def test_empty_front_matter_is_reported_as_missing_title() -> None:
    message = problem("---\n---\nbody\n")
    assert "no 'title'" in message, f"the front matter is closed, only the title is missing; said: {message}"


def test_template_problem_is_a_value_error() -> None:
    assert issubclass(TemplateProblem, ValueError), "callers may catch ValueError for bad input"


def test_undefined_variable_names_the_variable() -> None:
    message = problem("---\ntitle: Review {{ collection }} by {{ reviewer }}\n---\nbody\n")
    assert "reviewer" in message, f"StrictUndefined: the error names the undefined variable: {message}"
    assert "does not render" in message


def test_undefined_variable_in_the_body_is_an_error_too() -> None:
    message = problem("---\ntitle: T\n---\n{{ metadata.missing_key }}\n")
    assert "missing_key" in message, f"a typo in the body is an error, not an empty string: {message}"


def test_jinja_syntax_error_is_a_template_problem() -> None:
    assert "title does not render" in problem("---\ntitle: \"{{ collection \"\n---\nbody\n")
    assert "body does not render" in problem("---\ntitle: T\n---\n{% if %}\n")


def test_unquoted_expression_in_front_matter_says_to_quote_it() -> None:
    assert "quote values" in problem("---\ntitle: {{ collection }}\n---\nbody\n")


@pytest.mark.parametrize(
    "code",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ metadata.__class__.__init__.__globals__ }}",
        "{{ ''.format.__self__ }}",
    ],
)
def test_sandbox_refuses_unsafe_template_code(code: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        render(f"---\ntitle: T\n---\n{code}\n")
    assert "does not render" in str(info.value), "unsafe template code is refused, not evaluated"


def test_sandbox_still_allows_ordinary_filters() -> None:
    issue = render("---\ntitle: '{{ collection|upper }}'\n---\n{{ metadata|length }} {{ version|replace('v', '#') }}\n",
                   metadata={"a": 1})
    assert issue.title == "CHURN-MODEL" and issue.body.startswith("1 #3")


# =========================================================================== Promotion validation


@pytest.mark.parametrize("name", ["entity", "project", "collection", "version"])
@pytest.mark.parametrize("value", ["", "   ", None], ids=["empty", "blank", "none"])
def test_promotion_requires_each_name(name: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        promotion(**{name: value})
    assert str(info.value).startswith(f"{name} is required"), f"the error names {name!r}: {info.value}"


@pytest.mark.parametrize("name", ["entity", "project", "collection", "version"])
@pytest.mark.parametrize("value", ["a/b", "v3:latest", "two words", "x\ny", "{{ x }}", "ü"])
def test_promotion_rejects_malformed_names(name: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        promotion(**{name: value})
    assert str(info.value).startswith(f"{name} {value!r}"), f"the error names {name!r} and the value: {info.value}"
    assert "letters, digits" in str(info.value), "the error says what is allowed"


def test_promotion_accepts_w_and_b_style_names() -> None:
    p = promotion(entity="acme-ml", project="wandb-registry-model", collection="fraud_model.v2", version="production")
    assert p.version == "production", "an alias used as the version is a valid name"


def test_promotion_does_not_share_metadata_with_the_template() -> None:
    meta = {"auc": 0.9}
    promotion(metadata=meta).context()["metadata"]["auc"] = 0.1
    assert meta == {"auc": 0.9}, "rendering never mutates the caller's metadata"


# =========================================================================== aliases from W&B


@pytest.mark.parametrize(
    "alias",
    ['prod"uction', "release #2", "x\ntitle: pwned\nassignees: mallory"],
    ids=["double-quote", "hash", "newline-injection"],
)
def test_an_unusual_alias_cannot_break_or_rewrite_the_front_matter(alias: str) -> None:
    # Either fix is fine: Promotion refuses such an alias up front, naming the field, or the
    # template renders it as plain text. A confusing YAML error or a rewritten issue is not.
    try:
        p = promotion(alias=alias)
    except ValueError as exc:
        assert "alias" in str(exc), f"a refused alias must be named in the error: {exc}"
        return
    try:
        issue = render_issue(TEMPLATE, p)
    except TemplateProblem as exc:
        raise AssertionError(f"the real template cannot render alias {alias!r}: {exc}") from exc
    assert "churn-model:v3" in issue.title, f"the title must still name the version, got {issue.title!r}"
    assert issue.assignees == (), f"an alias must not assign anyone, got {issue.assignees}"
    assert issue.labels == ("model-review", alias), f"the alias is one label, got {issue.labels}"
