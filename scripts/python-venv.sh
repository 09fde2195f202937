# Sourced by the scripts that need Python. ensure_python_venv: the environment of the baselines, in
# ml-models/cache/venv, with onnxruntime from the wheel `make runtime` fetched (the same
# version as the node's runtime library).
# Usage: . scripts/python-venv.sh; ensure_python_venv [extra packages...]
VENV=ml-models/cache/venv

ensure_python_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --find-links ml-models/cache/wheels onnxruntime==1.31.1 tokenizers numpy "$@"
}

# Creates (once) the virtual environment $1 and installs the pinned requirements file $2 into
# it; reinstalls only when the file changes (a copy of it is kept in the environment).
# Usage: . scripts/python-venv.sh; ensure_requirements_venv target/venv-x scripts/requirements-x.txt
ensure_requirements_venv() {
    local venv=$1 requirements=$2
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/installed-requirements.txt"
    fi
}
