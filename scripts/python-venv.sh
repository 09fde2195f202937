# Sourced by the benchmark scripts: the Python environment of the baselines, in
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
