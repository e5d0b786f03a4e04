# Shared by the scripts: one place that knows how to build the virtualenv.
# Sourced, not run. Defines VA_VENV, VA_PYTHON and ensure_test_env.

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
}
