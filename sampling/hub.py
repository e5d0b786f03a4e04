"""Hugging Face Hub ids: telling them from local paths, downloading what a loader needs, explaining failures.

:func:`download_snapshot` fetches only the files a loader asks for, into the ordinary Hugging Face cache,
from a daemon thread the caller polls, so a download

* is bounded: when the Hub does not answer within :func:`hub_timeout` seconds (the machine is offline, a
  firewall swallows the connection) the load fails with a message saying so, instead of the worker sitting
  in a socket read (huggingface_hub's metadata requests have no timeout of their own);
* is cancellable: ``should_stop()`` is polled every :data:`POLL_SECONDS`; when it turns true the load raises
  :class:`LoadCancelled` at once, and the download thread stops at its next progress update (files already
  fetched stay in the cache, a partial file resumes next time).

``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) reads the cache only, with no network access.
Messages never contain a token (:func:`scrub_secrets`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .if_models import COMFY_DIFFUSERS_DIR
from .model_errors import LoadCancelled, ModelLoadError, first_line
from .scrubbing import scrub_secrets

IF_LICENCE_URL = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"
HF_TOKENS_URL = "https://huggingface.co/settings/tokens"
#: How long to wait for the Hub's first answer. The variable is huggingface_hub's own download timeout, so one
#: setting lengthens both waits on a slow connection.
HUB_TIMEOUT_VARIABLE = "HF_HUB_DOWNLOAD_TIMEOUT"
DEFAULT_HUB_TIMEOUT_SECONDS = 30.0
#: How often a waiting load checks ``should_stop()`` (ComfyUI's cancel button should feel immediate).
POLL_SECONDS = 0.1

ShouldStop = Callable[[], bool]
#: Error class names (from huggingface_hub, httpx, requests) that mean the Hub could not be reached.
_UNREACHABLE_ERRORS = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "ConnectionError",
    "ConnectTimeout",
    "ConnectError",
}


class HubNoAnswer(TimeoutError):
    """The Hub did not answer in time (``seconds`` None: it stopped answering during a download)."""

    def __init__(self, endpoint: str, seconds: float | None):
        self.endpoint = endpoint
        self.seconds = seconds
        when = f"within {seconds:g} s" if seconds is not None else "during the download"
        super().__init__(f"no answer from {endpoint} {when}")


class _DownloadAbandoned(Exception):
    """Raised inside the download thread (from a progress update) once its caller has given up."""


# -- sources ----------------------------------------------------------------------------------------------------
def resolve_source(source: str | os.PathLike) -> Path | str:
    """A local folder (``Path``) or a Hugging Face repo id (``str``).

    Anything that exists on disk is local; a string shaped like ``owner/name``
    that does not exist is a Hub id; anything else is a missing local path.
    """
    if isinstance(source, os.PathLike):
        return Path(source).expanduser()
    if not isinstance(source, str) or not source.strip():
        raise ModelLoadError(f"no model given (got {source!r}): pick a folder or a Hugging Face id")
    text = source.strip()
    path = Path(text).expanduser()
    if path.exists() or not looks_like_hub_id(text):
        return path
    return text


def looks_like_hub_id(text: str) -> bool:
    return (
        not os.path.isabs(text)
        and not text.startswith((".", "~"))
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", text) is not None
    )


def hub_offline() -> bool:
    """Whether the environment forbids network access to the Hub (read at call time)."""
    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")


def hub_timeout() -> float:
    """Seconds to wait for the Hub to answer: ``HF_HUB_DOWNLOAD_TIMEOUT`` if set to a positive number, else 30."""
    try:
        seconds = float(os.environ.get(HUB_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return DEFAULT_HUB_TIMEOUT_SECONDS
    return seconds if seconds > 0 else DEFAULT_HUB_TIMEOUT_SECONDS


# -- downloads --------------------------------------------------------------------------------------------------
def download_snapshot(
    repo_id: str,
    allow_patterns: Sequence[str],
    *,
    what: str,
    extra: str = "",
    timeout: float | None = None,
    should_stop: ShouldStop | None = None,
) -> Path:
    """Download the files of ``repo_id`` matching ``allow_patterns`` (or find them in the cache); their folder.

    ``what`` names the model in messages ("Stage I model"); ``extra`` is appended to the Hub message.
    Raises :class:`LoadCancelled` when ``should_stop()`` turns true, and :class:`ModelLoadError` with
    :func:`hub_error_message` for every other failure (no answer within ``timeout`` seconds included).
    """
    timeout = hub_timeout() if timeout is None else timeout
    from huggingface_hub import snapshot_download

    if hub_offline():  # the cache only: no thread needed, nothing can block
        try:
            return Path(snapshot_download(repo_id, allow_patterns=list(allow_patterns), local_files_only=True))
        except Exception as error:  # every failure becomes the Hub message
            raise ModelLoadError(hub_error_message(repo_id, what, error, extra=extra)) from error

    download = _Download(repo_id, list(allow_patterns), timeout)
    download.start()
    started = time.monotonic()
    while download.is_alive():
        download.join(POLL_SECONDS)
        if not download.is_alive():
            break
        if should_stop is not None and should_stop():
            download.abandon()
            raise LoadCancelled(
                f"loading the {what} '{repo_id}' was cancelled while it was being downloaded from the Hugging Face "
                "Hub; files already downloaded stay in the Hugging Face cache, and the next load continues from them"
            )
        if not download.answered.is_set() and time.monotonic() - started > timeout:
            download.abandon()  # its own request timeout ends the thread
            cached = cached_snapshot(repo_id, allow_patterns)
            if cached is not None:
                return Path(cached)
            no_answer = HubNoAnswer(_endpoint(), timeout)
            raise ModelLoadError(hub_error_message(repo_id, what, no_answer, extra=extra)) from no_answer
    if download.error is not None:
        raise ModelLoadError(hub_error_message(repo_id, what, download.error, extra=extra)) from download.error
    return Path(download.result)


def download_weights(
    repo_id: str,
    patterns: Callable[[str | None], list[str]],
    *,
    variant: str | None,
    has_variant: Callable[[Path], bool],
    what: str,
    extra: str = "",
    timeout: float | None = None,
    should_stop: ShouldStop | None = None,
) -> Path:
    """Download one weight set: ``variant`` ("fp16") when the repo has it, else the default weights.

    ``patterns(variant)`` lists the files to fetch for a variant (``None``: the default weights);
    ``has_variant(folder)`` says whether the downloaded folder holds the whole variant. Repos without the
    variant, or a cache holding only the default weights (offline), fall back to the default weights.
    """

    def fetch(chosen: str | None) -> Path:
        return download_snapshot(
            repo_id, patterns(chosen), what=what, extra=extra, timeout=timeout, should_stop=should_stop
        )

    if variant is not None:
        try:
            root = fetch(variant)
        except LoadCancelled:
            raise
        except ModelLoadError:
            if not hub_offline():  # online, a missing variant is no error: timeouts and refusals are final
                raise
        else:
            if has_variant(root):
                return root
    return fetch(None)


class _Download(threading.Thread):
    """``snapshot_download`` behind a first, bounded request, in a daemon thread that its caller may abandon."""

    def __init__(self, repo_id: str, allow_patterns: list[str], timeout: float):
        super().__init__(name=f"hub download {repo_id}", daemon=True)
        self.repo_id = repo_id
        self.allow_patterns = allow_patterns
        self.timeout = timeout
        self.answered = threading.Event()  # the Hub answered the first request: downloads have their own timeouts
        self._abandoned = threading.Event()
        self.result: str | None = None
        self.error: BaseException | None = None

    def abandon(self) -> None:
        self._abandoned.set()

    def run(self) -> None:
        from huggingface_hub import HfApi, snapshot_download

        try:
            # snapshot_download's own first request (the repo's revision) has no timeout: ask once with one.
            try:
                HfApi().repo_info(self.repo_id, timeout=self.timeout)
            except Exception:
                # Unreachable, or refused: a complete copy in the cache still loads, as diffusers would load it.
                self.result = cached_snapshot(self.repo_id, self.allow_patterns)
                if self.result is None:
                    raise
                return
            self.answered.set()
            if self._abandoned.is_set():
                return
            self.result = snapshot_download(
                self.repo_id,
                allow_patterns=self.allow_patterns,
                etag_timeout=self.timeout,
                tqdm_class=_abandonable_progress(self._abandoned),
            )
        except BaseException as error:  # noqa: BLE001 - handed over to the waiting caller, which raises it
            if any(_is_timeout(e) for e in error_chain(error)):
                no_answer = HubNoAnswer(_endpoint(), None if self.answered.is_set() else self.timeout)
                no_answer.__cause__ = error
                error = no_answer
            self.error = error


def cached_snapshot(repo_id: str, allow_patterns: Sequence[str]) -> str | None:
    """The folder of a complete cached download of these files, or None (reads the disk only)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=list(allow_patterns), local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or only in part): the caller reports why it had to download
        return None


def _abandonable_progress(abandoned: threading.Event):
    """huggingface_hub's progress bar class, raising on the next update once the caller has given up."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class AbandonableProgress(hub_tqdm):
        def update(self, n=1):
            if abandoned.is_set():
                raise _DownloadAbandoned("the load that asked for this download was cancelled")
            return super().update(n)

    return AbandonableProgress


# -- messages ---------------------------------------------------------------------------------------------------
def hub_error_message(repo_id: str, what: str, error: BaseException, *, extra: str = "") -> str:
    """Why a Hub download failed and exactly what to do; never contains a token."""
    gated = repo_id.startswith("DeepFloyd/")
    root = root_cause(error)
    chain = error_chain(error)
    names = {type(e).__name__ for e in chain}
    no_answer = next((e for e in chain if isinstance(e, HubNoAnswer)), None)
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set, so nothing can be downloaded, and the files are not in the local cache"
    elif no_answer is not None:
        when = f"within {no_answer.seconds:g} s" if no_answer.seconds is not None else "during the download"
        reason = f"the Hub ({no_answer.endpoint}) did not answer {when}, and the files are not in the local cache"
    elif "GatedRepoError" in names:
        reason = "the repository is gated and this account has not been granted access"
    elif "RepositoryNotFoundError" in names:
        reason = "the repository was not found (gated repositories look missing when you are not logged in)"
    elif names & _UNREACHABLE_ERRORS:
        reason = "the Hub could not be reached and the files are not in the local cache"
    else:
        reason = "the download failed"
    folder_name = repo_id.split("/")[-1]
    steps = []
    if gated:
        also = "" if IF_LICENCE_URL.endswith(repo_id) else f" (and on https://huggingface.co/{repo_id} if it asks too)"
        steps.append(
            f"DeepFloyd IF is gated: while logged in to huggingface.co, accept the licence on {IF_LICENCE_URL}{also}"
        )
    steps.append(f"create an access token at {HF_TOKENS_URL}")
    steps.append(
        "log in on this machine with `huggingface-cli login` (newer: `hf auth login`), or set the HF_TOKEN "
        "environment variable before starting ComfyUI"
    )
    steps.append("make sure this machine is online and HF_HUB_OFFLINE is not set")
    if no_answer is not None:
        steps.append(f"on a slow connection, set {HUB_TIMEOUT_VARIABLE} to more seconds before starting ComfyUI")
    numbered = " ".join(f"({i}) {step};" for i, step in enumerate(steps, 1))
    message = (
        f"Could not get the {what} '{repo_id}' from the Hugging Face Hub: {reason}. To download it: {numbered} "
        f"or download the repository's files yourself (e.g. `huggingface-cli download {repo_id} --local-dir "
        f"{COMFY_DIFFUSERS_DIR}/{folder_name}`) into {COMFY_DIFFUSERS_DIR}/{folder_name}/ and pick that "
        f"folder instead. {extra}".rstrip()
    )
    return scrub_secrets(f"{message} (cause: {type(root).__name__}: {first_line(root)})")


def is_hub_error(error: BaseException) -> bool:
    """An error from fetching files (network, gating, offline cache miss)."""
    hub_names = {
        "GatedRepoError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "RemoteEntryNotFoundError",
        "LocalEntryNotFoundError",
        "IncompleteSnapshotError",
        "OfflineModeIsEnabled",
        "HfHubHTTPError",
        "LocalTokenNotFoundError",
        "HFValidationError",
    }
    return any(
        type(e).__name__ in hub_names or isinstance(e, (OSError, ConnectionError, TimeoutError))
        for e in error_chain(error)
    )


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes / contexts, outermost first."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def root_cause(error: BaseException) -> BaseException:
    return error_chain(error)[-1]


def _is_timeout(error: BaseException) -> bool:
    # httpx, requests and the socket layer each have their own timeout classes.
    return isinstance(error, TimeoutError) or "Timeout" in type(error).__name__


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
