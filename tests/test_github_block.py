"""GitHubRepository block against a local GitHub server, through the real PyGithub over real HTTP."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from prefect.states import Completed, Failed
from pydantic import ValidationError

from blocks.github import (
    GitHubConfigError,
    GitHubRepository,
    IssueRef,
    TransientGitHubError,
    call_with_retries,
    is_transient,
    retry_delays_from_env,
    retry_if_transient,
    retry_wait,
)
from tests.fakes.github_api import FakeGitHub

TOKEN = "ghp_fakeTokenForTests0123456789abcdef"
REPO = "acme/models"
MARKER = "<!-- modelops:review acme/models/churn:v3 -->"
BODY = f"Please review churn:v3 before it goes to production.\n\n{MARKER}\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repositories=[REPO], users=["alice", "bob"]) as server:
        yield server


@pytest.fixture
def block(fake: FakeGitHub) -> GitHubRepository:
    return GitHubRepository(token=TOKEN, repository=REPO, base_url=fake.base_url)


def open_review(block: GitHubRepository) -> IssueRef:
    return block.open_issue("Promote churn:v3", BODY, ["model-review", "churn"], ["alice", "bob"], MARKER)


def posts(fake: FakeGitHub) -> list[tuple[str, str]]:
    return [request for request in fake.requests if request == ("POST", f"/repos/{REPO}/issues")]


def everything_printed(exc: BaseException) -> str:
    """What a log line or a Prefect state message could show: str, repr and the chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# -- opening issues ---------------------------------------------------------------------------------


def test_open_issue_creates_the_issue_with_title_labels_assignees_and_body(block, fake):
    ref = open_review(block)

    assert ref == IssueRef(number=1, url=f"{fake.origin}/{REPO}/issues/1", title="Promote churn:v3", created=True)
    [issue] = fake.issues
    assert issue["title"] == "Promote churn:v3"
    assert issue["body"] == BODY
    assert [label["name"] for label in issue["labels"]] == ["model-review", "churn"]
    assert [user["login"] for user in issue["assignees"]] == ["alice", "bob"]


def test_open_issue_twice_with_the_same_marker_opens_one_issue(block, fake):
    first = open_review(block)
    second = open_review(block)

    assert first.created and not second.created
    assert second.number == first.number and second.url == first.url
    assert len(fake.issues) == 1, "a second delivery of the same event must not open a second issue"
    assert len(posts(fake)) == 1


def test_the_marker_lookup_lists_all_states_filtered_by_the_first_label(block, fake):
    fake.add_issue(REPO, "Old review", BODY, labels=["model-review"], state="closed")

    ref = open_review(block)

    assert (ref.number, ref.created) == (1, False), "a closed review issue still counts as already opened"
    assert posts(fake) == []


def test_a_pull_request_quoting_the_marker_is_not_the_issue(block, fake):
    fake.add_issue(REPO, "Docs: how review issues look", BODY, labels=["model-review"], pull_request=True)

    ref = open_review(block)

    assert ref.created and ref.number == 2
    assert block.find_issue(MARKER, ["model-review"]) == IssueRef(ref.number, ref.url, ref.title, created=False)


def test_find_issue_follows_pagination(block, fake):
    fake.add_issue(REPO, "The one", BODY, labels=["model-review"])
    for n in range(150):
        fake.add_issue(REPO, f"Other review {n}", f"<!-- modelops:review other:{n} -->", labels=["model-review"])

    found = block.find_issue(MARKER, ["model-review"])

    assert found is not None and found.number == 1, "the oldest issue sits on the second page (newest first)"
    assert fake.requests.count(("GET", f"/repos/{REPO}/issues")) == 2


def test_find_issue_returns_none_when_no_issue_carries_the_marker(block, fake):
    fake.add_issue(REPO, "Other", "<!-- modelops:review other -->", labels=["model-review"])
    assert block.find_issue(MARKER, ["model-review"]) is None
    assert block.find_issue(MARKER) is None


def test_the_body_must_carry_the_marker(block, fake):
    with pytest.raises(ValueError, match="marker"):
        block.open_issue("t", "no marker here", [], [], MARKER)
    assert fake.requests == [], "nothing may be sent for a create that could not be found again"


# -- lost replies and retries -----------------------------------------------------------------------


def test_a_502_after_the_issue_landed_then_a_retry_still_gives_one_issue(block, fake):
    # GitHub stored the issue, but the proxy answered 502.
    fake.fail_next("POST", "/issues", 502, land=True)
    with pytest.raises(TransientGitHubError) as caught:
        open_review(block)
    assert caught.value.status == 502
    assert len(posts(fake)) == 1, "PyGithub itself must not resend the POST"
    assert len(fake.issues) == 1

    # The flow's task retry calls open_issue again: the marker finds the landed issue.
    again = open_review(block)

    assert (again.number, again.created) == (1, False)
    assert len(fake.issues) == 1, "the retry after a lost reply must not duplicate the issue"
    assert len(posts(fake)) == 1


def test_a_502_that_did_not_land_is_transient_and_the_retry_creates_the_issue(block, fake):
    fake.fail_next("POST", "/issues", 502, body="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(TransientGitHubError):
        open_review(block)
    assert fake.issues == []
    assert len(posts(fake)) == 1, "PyGithub itself must not resend the POST"

    ref = open_review(block)

    assert (ref.number, ref.created) == (1, True)
    assert len(fake.issues) == 1


def test_a_5xx_on_a_read_is_transient_and_not_retried_by_pygithub(block, fake):
    fake.fail_next("GET", "/issues", 503)
    with pytest.raises(TransientGitHubError):
        open_review(block)
    assert fake.requests.count(("GET", f"/repos/{REPO}/issues")) == 1
    assert posts(fake) == [], "no create without the duplicate check"


@pytest.mark.parametrize(
    ("status", "headers", "body", "retry_after"),
    [
        pytest.param(403, None, None, 60.0, id="secondary-rate-limit-403"),
        pytest.param(429, None, None, 60.0, id="429"),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "{now+120}"},
            {"message": "API rate limit exceeded for user ID 1."},
            121.0,
            id="primary-rate-limit-403-waits-until-reset",
        ),
        pytest.param(403, {"retry-after": "5"}, {"message": "Forbidden"}, 5.0, id="403-with-retry-after"),
        pytest.param(403, {"retry-after": "{http-date+30}"}, None, 30.0, id="retry-after-as-http-date"),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "{now-5}"},
            {"message": "API rate limit exceeded for user ID 1."},
            1.0,
            id="reset-in-the-past-waits-the-skew-margin",
        ),
    ],
)
def test_rate_limits_are_transient(block, fake, status, headers, body, retry_after):
    now = int(time.time())
    headers = {k: v.replace("{now+120}", str(now + 120)).replace("{now-5}", str(now - 5))
               .replace("{http-date+30}", formatdate(now + 30, usegmt=True)) for k, v in (headers or {}).items()}
    fake.fail_next("POST", "/issues", status, headers=headers or None, body=body)

    with pytest.raises(TransientGitHubError) as caught:
        open_review(block)

    assert caught.value.status == status
    assert caught.value.rate_limited
    # header values are whole seconds read a moment later: allow for the time the request took
    assert retry_after - 5 <= caught.value.retry_after <= retry_after
    assert is_transient(caught.value)
    assert len(posts(fake)) == 1, "PyGithub itself must not resend a rate-limited POST"


def test_an_unreachable_server_is_transient(fake):
    base_url = fake.base_url
    fake.close()
    block = GitHubRepository(token=TOKEN, repository=REPO, base_url=base_url)

    with pytest.raises(TransientGitHubError, match="could not reach GitHub"):
        open_review(block)


def test_a_timeout_is_transient(fake):
    # PyGithub only takes whole seconds: 0.5 becomes 1.
    block = GitHubRepository(token=TOKEN, repository=REPO, base_url=fake.base_url, timeout=0.5)
    fake.fail_next("GET", f"/repos/{REPO}/issues", 200, delay=2.5)

    with pytest.raises(TransientGitHubError, match="Timeout"):
        block.find_issue(MARKER)


def test_a_tls_failure_is_a_configuration_error(fake):
    # https:// against the plain-HTTP fake: the handshake fails the same way on every retry.
    block = GitHubRepository(token=TOKEN, repository=REPO, base_url=fake.base_url.replace("http://", "https://"))

    with pytest.raises(GitHubConfigError, match="TLS .* failed for GitHub"):
        block.find_issue(MARKER)


# -- configuration errors ---------------------------------------------------------------------------


def test_a_rejected_token_names_the_setting_and_never_the_token(fake):
    wrong = "ghp_wrongTokenNeverToBePrinted000000"
    block = GitHubRepository(token=wrong, repository=REPO, base_url=fake.base_url)

    with pytest.raises(GitHubConfigError) as caught:
        open_review(block)

    message = str(caught.value)
    assert "rejected the token" in message
    assert "the GitHubRepository block's token or GITHUB_TOKEN" in message
    assert not is_transient(caught.value), "a bad token will not get better by retrying"
    printed = everything_printed(caught.value)
    assert wrong not in printed and TOKEN not in printed


def test_an_unknown_repository_names_the_repository_and_where_to_fix_it(fake):
    block = GitHubRepository(token=TOKEN, repository="acme/typo", base_url=fake.base_url)

    with pytest.raises(GitHubConfigError) as caught:
        open_review(block)

    message = str(caught.value)
    assert "'acme/typo' was not found at " + fake.base_url in message
    for setting in ("GITHUB_REPOSITORY", "GITHUB_API_URL", "base_url", "repository", "token"):
        assert setting in message
    assert TOKEN not in everything_printed(caught.value)


def test_a_forbidden_request_is_permanent_and_carries_githubs_message(block, fake):
    fake.fail_next("POST", "/issues", 403, body={"message": "Resource not accessible by integration"})

    with pytest.raises(GitHubConfigError, match="Resource not accessible by integration") as caught:
        open_review(block)

    assert caught.value.status == 403 and not is_transient(caught.value)


def test_an_invalid_assignee_is_permanent_and_named(block, fake):
    with pytest.raises(GitHubConfigError, match="Validation Failed.*mallory") as caught:
        block.open_issue("t", BODY, [], ["mallory"], MARKER)
    assert caught.value.status == 422
    assert fake.issues == []


# -- comments ---------------------------------------------------------------------------------------


def test_comment_with_a_marker_is_posted_once(block, fake):
    issue = open_review(block)
    note = "Canary reached 30% <!-- modelops:canary-step 30 -->"

    first = block.comment(issue.number, note, marker="<!-- modelops:canary-step 30 -->")
    second = block.comment(issue.number, note, marker="<!-- modelops:canary-step 30 -->")
    plain = block.comment(issue.number, "A plain note")

    assert first.created and not second.created and plain.created
    assert second.id == first.id
    assert [comment["body"] for comment in fake.comments] == [note, "A plain note"]


def test_comment_on_a_missing_issue_names_the_issue(block):
    with pytest.raises(GitHubConfigError, match="issue #42 was not found in 'acme/models'"):
        block.comment(42, "hello")


# -- configuration ----------------------------------------------------------------------------------


def test_base_url_is_honoured_for_github_enterprise_paths():
    with FakeGitHub(token=TOKEN, repositories=[REPO], prefix="/api/v3") as ghe:
        block = GitHubRepository(token=TOKEN, repository=REPO, base_url=ghe.base_url + "/")

        ref = open_review(block)

    assert block.base_url == ghe.base_url, "a trailing slash is dropped"
    assert ref.created
    assert ghe.requests and all(path.startswith("/api/v3/repos/acme/models") for _, path in ghe.requests)


def test_from_env_with_all_variables():
    block = GitHubRepository.from_env(
        {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": "https://ghe.example.com/api/v3"}
    )
    assert block is not None
    assert (block.token.get_secret_value(), block.repository, block.base_url) == (
        TOKEN,
        REPO,
        "https://ghe.example.com/api/v3",
    )


def test_from_env_defaults_to_github_com():
    block = GitHubRepository.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": ""})
    assert block is not None and block.base_url == "https://api.github.com"


def test_from_env_without_variables_is_none():
    assert GitHubRepository.from_env({}) is None
    assert GitHubRepository.from_env({"GITHUB_TOKEN": "", "GITHUB_REPOSITORY": " "}) is None


@pytest.mark.parametrize(
    ("environ", "missing"),
    [({"GITHUB_TOKEN": TOKEN}, "GITHUB_REPOSITORY"), ({"GITHUB_REPOSITORY": REPO}, "GITHUB_TOKEN")],
)
def test_from_env_with_one_of_the_two_names_the_missing_variable(environ, missing):
    with pytest.raises(ValueError, match=f"{missing} is not"):
        GitHubRepository.from_env(environ)


def test_from_env_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    block = GitHubRepository.from_env()
    assert block is not None and block.repository == REPO


@pytest.mark.parametrize("repository", ["acme", "acme/", "/models", "acme/models/extra", "ac me/models", "acme/.."])
def test_repository_must_be_owner_slash_name(repository):
    with pytest.raises(ValidationError, match="owner/name"):
        GitHubRepository(token=TOKEN, repository=repository)


@pytest.mark.parametrize("base_url", ["api.github.com", "ftp://ghe.example.com", "https://"])
def test_base_url_must_be_http_or_https(base_url):
    with pytest.raises(ValidationError, match="base_url"):
        GitHubRepository(token=TOKEN, repository=REPO, base_url=base_url)


def test_the_token_must_not_be_empty():
    with pytest.raises(ValidationError, match="token"):
        GitHubRepository(token="", repository=REPO)


def test_the_block_type_is_registered_under_its_slug():
    assert GitHubRepository.get_block_type_slug() == "github-repository"
    assert GitHubRepository.get_block_type_name() == "GitHub Repository"


def test_plain_http_base_url_is_allowed():
    block = GitHubRepository(token=TOKEN, repository=REPO, base_url="http://git.internal:8080/api/v3")
    assert block.base_url == "http://git.internal:8080/api/v3"


def test_the_token_never_shows(block):
    for shown in (str(block), repr(block), block.model_dump_json(), str(block.model_dump())):
        assert TOKEN not in shown
    assert block.token.get_secret_value() == TOKEN


def test_importing_the_block_does_not_import_pygithub():
    code = "import sys, blocks.github; assert 'github' not in sys.modules, 'PyGithub imported eagerly'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# -- retry helpers ----------------------------------------------------------------------------------


def test_is_transient_and_the_prefect_retry_condition():
    transient = TransientGitHubError("GitHub server error (502)", status=502)
    permanent = GitHubConfigError("repository 'acme/typo' was not found", status=404)

    assert is_transient(transient) and not is_transient(permanent) and not is_transient(ValueError())
    assert retry_if_transient(None, None, Failed(data=transient))
    assert not retry_if_transient(None, None, Failed(data=permanent))
    assert not retry_if_transient(None, None, Completed(data=1))


def test_errors_survive_pickling_with_their_details():
    error = pickle.loads(pickle.dumps(TransientGitHubError("rate limited", status=429, retry_after=60.0,
                                                           rate_limited=True)))
    assert (str(error), error.status, error.retry_after, error.rate_limited) == ("rate limited", 429, 60.0, True)
    config = pickle.loads(pickle.dumps(GitHubConfigError("bad token", status=401)))
    assert (str(config), config.status) == ("bad token", 401)


# -- waiting as long as GitHub asks -----------------------------------------------------------------


class Sleeps(list):
    """An injectable `sleep` that records the waits asked for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_secondary_rate_limit_waits_its_retry_after_not_the_fixed_delay(block, fake):
    fake.fail_next("POST", "/issues", 403, headers={"retry-after": "7"})
    sleeps, logged = Sleeps(), []

    ref = call_with_retries(lambda: open_review(block), delays=[1, 3], sleep=sleeps, log=logged.append)

    assert ref.created and len(fake.issues) == 1
    assert sleeps == [7.0], "the wait follows GitHub's Retry-After, not the first fixed delay (1 s)"
    assert "retrying in 7s" in logged[0] and "Retry-After" in logged[0]


def test_a_429_with_an_exhausted_primary_limit_waits_until_the_reset(block, fake):
    reset = int(time.time()) + 20
    # a body of its own: the fake then adds no retry-after, only these primary-limit headers
    fake.fail_next("GET", "/issues", 429, body={"message": "API rate limit exceeded for user ID 1."},
                   headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    sleeps = Sleeps()

    call_with_retries(lambda: open_review(block), delays=[1], sleep=sleeps, log=lambda _: None)

    assert len(sleeps) == 1 and 15 <= sleeps[0] <= 21, sleeps


def test_a_wait_longer_than_the_cap_is_capped_and_says_so(block, fake):
    fake.fail_next("POST", "/issues", 429, headers={"retry-after": "3600"})
    sleeps, logged = Sleeps(), []

    call_with_retries(lambda: open_review(block), delays=[1], max_wait=90, sleep=sleeps, log=logged.append)

    assert sleeps == [90]
    assert "GitHub asks for 3600s; capped at 90s" in logged[0]


def test_a_5xx_waits_the_fixed_delays_and_the_last_error_propagates(block, fake):
    fake.fail_next("GET", "/issues", 502, times=3)
    sleeps = Sleeps()

    with pytest.raises(TransientGitHubError) as caught:
        call_with_retries(lambda: open_review(block), delays=[1, 3], sleep=sleeps, log=lambda _: None)

    assert caught.value.status == 502
    assert sleeps == [1, 3], "two retries, then the third failure is raised"
    assert fake.issues == []


def test_a_permanent_error_is_not_retried():
    sleeps = Sleeps()
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise GitHubConfigError("bad token", status=401)

    with pytest.raises(GitHubConfigError):
        call_with_retries(refuse, delays=[1, 1], sleep=sleeps)
    assert calls == [1] and sleeps == []


@pytest.mark.parametrize(
    ("error", "delay", "expected"),
    [
        (TransientGitHubError("502", status=502), 3, 3),
        (TransientGitHubError("503", status=503, retry_after=8), 3, 8),
        (TransientGitHubError("403", status=403, retry_after=2, rate_limited=True), 10, 2),
        (TransientGitHubError("403", status=403, rate_limited=True), 3, 60),
        (TransientGitHubError("429", status=429, retry_after=10_000, rate_limited=True), 3, 300),
    ],
    ids=["5xx-fixed", "5xx-retry-after", "header-shorter-than-delay", "rate-limit-without-header", "capped"],
)
def test_retry_wait(error, delay, expected):
    assert retry_wait(error, delay) == expected


def test_retry_delays_from_env():
    assert retry_delays_from_env({}) == (1, 3, 10, 30)
    assert retry_delays_from_env({"MODELOPS_GITHUB_RETRY_DELAYS": "0.5, 1,2"}) == (0.5, 1, 2)
    with pytest.raises(ValueError, match="MODELOPS_GITHUB_RETRY_DELAYS"):
        retry_delays_from_env({"MODELOPS_GITHUB_RETRY_DELAYS": "1,soon"})
    with pytest.raises(ValueError, match="negative"):
        retry_delays_from_env({"MODELOPS_GITHUB_RETRY_DELAYS": "1,-2"})


# -- racing runs ------------------------------------------------------------------------------------


def race(block: GitHubRepository, runs: int = 2) -> list[IssueRef | BaseException]:
    """`runs` threads calling open_review at once; each result or exception, in thread order."""
    results: list[IssueRef | BaseException] = [RuntimeError("did not finish")] * runs
    start = threading.Barrier(runs)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = open_review(block)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_racing_creates_settle_on_one_open_issue(block, fake):
    # Both listings are answered before either create lands: both runs find nothing and create.
    fake.stall("GET", f"/repos/{REPO}/issues", 1.0, times=2)

    results = race(block)

    assert all(isinstance(r, IssueRef) for r in results), results
    assert len(posts(fake)) == 2, "the stall must make both runs create (else this test shows nothing)"
    assert sorted(r.closed_duplicates for r in results) == [(), (2,)], "the loser closed its own issue"
    assert {r.number for r in results} == {1}, "both runs return the lowest-numbered issue"
    assert sorted(r.created for r in results) == [False, True], "only the run that opened #1 says created"
    first, second = fake.issues
    assert (first["state"], second["state"], second["state_reason"]) == ("open", "closed", "not_planned")
    assert MARKER in first["body"] and MARKER not in second["body"], "the duplicate no longer carries the marker"
    [note] = [c for c in fake.comments if c["issue_url"] == second["url"]]
    assert note["body"].startswith("Duplicate of #1")

    again = open_review(block)
    assert (again.number, again.created) == (1, False) and len(fake.issues) == 2
    assert block.find_issue(MARKER, ["model-review"]).number == 1


def test_a_duplicate_left_by_a_crashed_run_is_closed_by_the_next_one(block, fake):
    fake.add_issue(REPO, "Promote churn:v3", BODY, labels=["model-review"])
    fake.add_issue(REPO, "Promote churn:v3", BODY, labels=["model-review"])

    assert block.find_issue(MARKER, ["model-review"]).number == 1
    assert all(issue["state"] == "open" for issue in fake.issues), "find_issue only reads"

    ref = open_review(block)

    assert (ref.number, ref.created, ref.closed_duplicates) == (1, False, (2,))
    assert [issue["state"] for issue in fake.issues] == ["open", "closed"]
    assert posts(fake) == []


def test_a_fault_while_closing_the_duplicate_is_healed_by_the_retry(block, fake):
    fake.stall("GET", f"/repos/{REPO}/issues", 1.0, times=2)
    fake.fail_next("PATCH", "/issues/2", 502)  # the loser's close fails once

    results = race(block)
    failed = [r for r in results if isinstance(r, TransientGitHubError)]
    assert len(failed) == 1 and [r.number for r in results if isinstance(r, IssueRef)] == [1]

    ref = open_review(block)  # the retry of the run that failed

    assert (ref.number, ref.created) == (1, False)
    assert [issue["state"] for issue in fake.issues] == ["open", "closed"]
    assert len([c for c in fake.comments if c["body"].startswith("Duplicate of #1")]) == 1, "commented once"


def test_a_match_on_the_first_page_fetches_no_second_page(block, fake):
    for n in range(150):
        fake.add_issue(REPO, f"Other review {n}", f"<!-- modelops:review other:{n} -->", labels=["model-review"])
    fake.add_issue(REPO, "The one", BODY, labels=["model-review"])

    assert block.find_issue(MARKER, ["model-review"]).number == 151
    assert fake.requests.count(("GET", f"/repos/{REPO}/issues")) == 1


def test_the_outcome_label_replaces_the_others_and_a_promoted_issue_can_be_closed(block, fake):
    ref = open_review(block)
    assert block.mark_outcome(ref.number, ["rolled-back"], remove=["promoted", "rejected"]) == [
        *[label["name"] for label in fake.issues[0]["labels"] if label["name"] != "rolled-back"], "rolled-back"]
    block.mark_outcome(ref.number, ["rolled-back"], remove=["promoted", "rejected"])  # idempotent: no edit
    edits = [r for r in fake.requests if r == ("PATCH", f"/repos/{REPO}/issues/{ref.number}")]
    assert len(edits) == 1
    labels = block.mark_outcome(ref.number, ["promoted"], close=True, remove=["rolled-back", "rejected"])
    assert "promoted" in labels and "rolled-back" not in labels
    issue = fake.issues[0]
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    assert [label["name"] for label in issue["labels"]] == labels
    # one comment per outcome: the marker finds the earlier one
    first = block.comment(ref.number, "promoted <!-- modelops:outcome x promoted -->",
                          marker="<!-- modelops:outcome x promoted -->")
    again = block.comment(ref.number, "promoted <!-- modelops:outcome x promoted -->",
                          marker="<!-- modelops:outcome x promoted -->")
    assert first.created and not again.created and first.id == again.id
