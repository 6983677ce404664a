"""The real agent binaries of the privileged tests, and how to run them here.

``make setup`` (deploy/install-agents.sh) installs the releases pinned in
``deploy/agents.txt`` from npm into ``/var/cache/busted/agents/NAME/package/...`` (never
committed). This module finds them and knows what each needs to run once,
non-interactively, against the fake APIs of the harness: the provider's real host name
(the client namespace's hosts file), the test CA (``NODE_EXTRA_CA_CERTS``, set by the
namespace; Bun reads it like node), an API key, and for Claude Code a fresh ``HOME`` and
no background traffic (updates, telemetry), so that one ``claude -p PROMPT`` makes the
requests it needs and exits. Gemini CLI is a node script (its npm bundle, run by the
system node) and needs the same: one ``gemini -p PROMPT`` makes one streamed request.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import wait_for

AGENT_CACHE = Path(os.environ.get("BUSTED_AGENT_CACHE", "/var/cache/busted/agents"))
AGENTS_TXT = Path(__file__).resolve().parents[3] / "deploy" / "agents.txt"
ANTHROPIC_KEY = "sk-ant-api03-test-SECRET-0123456789abcdef"
MODEL = "claude-sonnet-4-5"  # asked for explicitly: each release has its own default
GEMINI_KEY = "test-key"
GEMINI_MODEL = "gemini-2.5-flash"
# Gemini CLI's settings for one quiet non-interactive run: no update check, no usage
# statistics or telemetry (both would open connections of their own), no folder-trust
# question, the API key as the way to sign in.
GEMINI_SETTINGS = {
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "security": {"folderTrust": {"enabled": False}, "auth": {"selectedType": "gemini-api-key"}},
}

# One Anthropic Messages request with a streamed answer, made with Bun's fetch (BoringSSL
# inside Bun). Prints its pid, its comm and the answer's text deltas as one JSON line.
BUN_FETCH = r"""
const [prompt, model] = process.argv.slice(2);
const res = await fetch("https://api.anthropic.com/v1/messages", {
  method: "POST",
  headers: {"content-type": "application/json", "x-api-key": process.env.ANTHROPIC_API_KEY,
            "anthropic-version": "2023-06-01"},
  body: JSON.stringify({model, max_tokens: 256, stream: true,
                        messages: [{role: "user", content: prompt}]}),
});
let answer = "";
for (const line of (await res.text()).split("\n")) {
  if (!line.startsWith("data: ")) continue;
  const event = JSON.parse(line.slice(6));
  if (event.type === "content_block_delta") answer += event.delta.text;
}
const comm = (await Bun.file("/proc/self/comm").text()).trim();
console.log(JSON.stringify({pid: process.pid, comm, status: res.status, answer}));
process.exit(res.status === 200 ? 0 : 1);
"""

# A download from a host that is no LLM (judged uninteresting: its SSL* stops being
# copied), then an Anthropic request on a new connection, which Bun makes with the same
# SSL* address (freed, then reused). Prints its pid and the answers' statuses.
BUN_DOWNLOAD_THEN_ASK = r"""
const [prompt, model, host] = process.argv.slice(2);
const statuses = [];
const download = await fetch(`https://${host}/download?bytes=800000&chunk=16384&pause_ms=20`,
                             {keepalive: false});
await download.arrayBuffer();
statuses.push(download.status);
await Bun.sleep(500);  // the verdict on the download reaches the kernel meanwhile
const res = await fetch("https://api.anthropic.com/v1/messages", {
  method: "POST", keepalive: false,
  headers: {"content-type": "application/json", "x-api-key": process.env.ANTHROPIC_API_KEY},
  body: JSON.stringify({model, max_tokens: 64, messages: [{role: "user", content: prompt}]}),
});
await res.text();
statuses.push(res.status);
console.log(JSON.stringify({pid: process.pid, statuses}));
process.exit(statuses.every((s) => s === 200) ? 0 : 1);
"""


def pinned() -> dict[str, str]:
    """name -> program path inside its package, from deploy/agents.txt."""
    found = {}
    for line in AGENTS_TXT.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not parts[0].startswith("#"):
            found[parts[0]] = parts[2]
    return found


def names(prefix: str) -> list[str]:
    """The pinned agents whose name starts with ``prefix`` ("claude-", "bun-")."""
    return sorted(name for name in pinned() if name.startswith(prefix))


def program(name: str) -> Path:
    """The installed program of one pinned agent; the test fails (never skips) without it.
    A ``.js`` program is run by node: it need not be executable."""
    path = AGENT_CACHE / name / "package" / pinned()[name]
    if not os.access(path, os.R_OK if path.suffix == ".js" else os.X_OK):
        pytest.fail(f"{path} is missing: run `make setup` (deploy/install-agents.sh installs "
                    f"the agents of deploy/agents.txt from npm)")
    return path


def claude_env(home: Path) -> dict[str, str]:
    """What `claude -p` needs to run once against the fake API and exit."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, no error reports
        "CI": "1",
    }


def claude_argv(binary: Path, prompt: str, workdir: Path, model: str = MODEL) -> list[str]:
    """`claude -p PROMPT` started in ``workdir`` (``env -C`` execs it: same pid). Not the
    repository: Claude Code puts the working directory's recent git commits in its
    system prompt, and busted's mention the words tests look for."""
    workdir.mkdir(parents=True, exist_ok=True)
    return ["env", "-C", str(workdir), str(binary), "-p", prompt, "--model", model]


def gemini_env(home: Path) -> dict[str, str]:
    """What `gemini -p` needs to run once against the fake API and exit: a fresh HOME
    with the settings above, and no relaunch (Gemini CLI otherwise starts itself again
    in a child node with a larger heap: the request would come from another pid)."""
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(GEMINI_SETTINGS))
    return {"HOME": str(home), "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_CLI_NO_RELAUNCH": "true"}


def gemini_argv(script: Path, prompt: str, workdir: Path, model: str = GEMINI_MODEL) -> list[str]:
    """`gemini -p PROMPT`: the system node running the bundle, started in ``workdir``
    (Gemini CLI lists the working directory in its request; ``env -C`` execs: same pid)."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is missing: install nodejs >= 20 (deploy/setup-host.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    return ["env", "-C", str(workdir), node, str(script), "-p", prompt, "-m", model]


def bun_argv(binary: Path, directory: Path, script: str, *args: str) -> list[str]:
    """Bun running one of the scripts above (written into ``directory``) with ``args``."""
    path = directory / f"bun-{hashlib.sha1(script.encode()).hexdigest()[:10]}.mjs"
    if not path.exists():
        path.write_text(script)
        path.chmod(0o644)
    return [str(binary), str(path), *args]


def bun_env() -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "BUN_RUNTIME_TRANSPILER_CACHE_PATH": "0"}


def probe_line(binary: Path) -> str:
    return f"BoringSSL probes on {binary}"


def wait_probed(monitor, binary: Path, warm_up: Callable[[], object],
                timeout: float = 30.0) -> None:
    """Return once ``monitor`` has attached its BoringSSL probes to ``binary``.

    Programs where agents install are probed when the monitor starts (AGENT_GLOBS);
    any other program is probed when it is exec'd, ~0.1-0.3 s after: then ``warm_up``
    runs it once (``--version``) and this waits for the monitor's log line."""
    def said(text: str) -> str | None:
        return next((line for line in list(monitor.stderr_lines) if text in line), None)

    if said(probe_line(binary)):
        return
    warm_up()
    try:
        wait_for(lambda: said(probe_line(binary)) or said(f"no probes on {binary}"), timeout,
                 f"the monitor's line '{probe_line(binary)}'")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{monitor.stderr_tail(20)}") from None
    refused = said(f"no probes on {binary}")
    if refused:
        raise AssertionError(f"the monitor could not probe {binary}: {refused}")
