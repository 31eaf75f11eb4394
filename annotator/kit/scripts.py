"""The texts a field kit carries (annotator/kit/build.py writes them): `install.sh`, which
checks the kit and installs it into a venv with no network, `start.sh`, which labels the sample
and opens the app, and the kit's README.
"""

from __future__ import annotations

import platform

from annotator import __version__
from annotator.kit import verify as kit_verify
from annotator.kit.wheelhouse import PROJECT


def _annotate_args(placed: dict[str, str]) -> str:
    args = [f'"$KIT/{placed["sample"]}"']
    if "model" in placed:
        args.append(f'--model "$KIT/{placed["model"]}"')
    if "base" in placed:
        args.append(f'--base "$KIT/{placed["base"]}"')
    if "rubric" in placed:
        args.append(f'--rubric "$KIT/{placed["rubric"]}"')
    return " ".join(args)


_INSTALL = """#!/bin/sh
# Install this kit into a virtual environment, with no network and no package index.
#   sh install.sh [VENV]        (default: venv/ inside the kit)
# The kit is checked first (sizes, sha256, platform, CPU); a damaged kit installs nothing.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$KIT/venv}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" "$KIT/verify.py" "$KIT"; then
    echo "install.sh: refused: the kit is damaged or not for this machine; nothing installed" >&2
    exit 1
fi
# pip reads nothing but this kit: no configuration file, no index, no other wheel folder.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_REQUIREMENT || true
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-index --find-links "$KIT/wheels" \\
    --only-binary :all: --require-hashes -r "$KIT/requirements.txt"
"$VENV/bin/python" "$KIT/verify.py" "$KIT" --marker "$VENV" >/dev/null
# Self-check: versions, backend, the embedded model assembled and its sha256, this kit.
"$VENV/bin/annotator" doctor
@CHECK_MODEL@echo "installed into $VENV"
@NEXT@"""


def _install_sh(placed: dict[str, str]) -> str:
    check = f'"$VENV/bin/annotator" inspect "$KIT/{placed["model"]}"\n' if "model" in placed else ""
    nxt = (
        'echo "next: sh $KIT/start.sh   (labels the sample and opens the app)"\n'
        if "sample" in placed
        else ""
    )
    return _INSTALL.replace("@CHECK_MODEL@", check).replace("@NEXT@", nxt)


def _start_sh(placed: dict[str, str]) -> str:
    return f"""#!/bin/sh
# Label the kit's sample into sample.db, then open the app on it.
#   sh start.sh [--no-app]      (--no-app: label only)
# Set ANNOTATOR_VENV when install.sh was given another VENV.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${{ANNOTATOR_VENV:-$KIT/venv}}"
PROJECT="${{ANNOTATOR_PROJECT:-$KIT/sample.db}}"
"$VENV/bin/annotator" annotate {_annotate_args(placed)} --project "$PROJECT"
if [ "${{1:-}}" != "--no-app" ]; then
    exec "$VENV/bin/annotator" tui "$PROJECT"
fi
"""


def _readme(placed: dict[str, str]) -> str:
    first = "sh install.sh && sh start.sh" if "sample" in placed else "sh install.sh"
    model = placed.get("model", "the embedded Gemma 3 270M")
    python = ".".join(platform.python_version_tuple()[:2])
    return f"""# annotator field kit

Offline rubric annotation ({PROJECT} {__version__}). Everything needed is in this folder:
no network and no package index are used. Python {python} with its venv module ({kit_verify.python_tag()}; on
Debian or Ubuntu the python3-venv package) on {kit_verify.platform_name()} is needed, as on
the machine that built the kit. `PYTHON=/path/to/python3.X sh install.sh` picks another one.

First command (installs into `venv/` here{", labels the sample and opens the app" if "sample" in placed else ""}):

```sh
{first}
```

`install.sh` first runs `python3 verify.py .`, which checks every file's size and sha256
against `MANIFEST.json`, the platform, and that this CPU has what the kit's llama.cpp build
needs (a portable CPU build), and refuses a damaged kit, naming the file. Then
`venv/bin/annotator doctor` shows the versions, the backend and this kit.

That check guards against damage. To know that this is the kit that was built, compare
`sha256sum MANIFEST.json` with the digest `annotator kit build` printed, received by another
way than the kit, then run `python3 verify.py . --digest DIGEST` before `install.sh`.

Model: `{model}`. Label your own data with

```sh
venv/bin/annotator annotate DATA.csv {"--model " + placed["model"] + " " if "model" in placed else ""}--project P.db
venv/bin/annotator tui P.db
```

Licences: see `MANIFEST.json` ("licences") and `licenses/`. The embedded base model, Gemma 3
270M, is provided under and subject to the Gemma Terms of Use; models fine-tuned from it
inherit those terms.
"""
