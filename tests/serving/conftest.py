"""The Triton serving tests need the serve environment (``make test-serve`` builds it with
``scripts/setup_serve.sh``: nvidia-pytriton pins numpy<2, tritonclient[grpc] protobuf<7, so
they cannot share the main ``.venv``). Elsewhere these modules are not collected; under
``NEMO_EXAONE_REQUIRE_SERVE=1`` (set by ``make test-serve``) a missing package is an error."""

from __future__ import annotations

import importlib.util
import os


def _missing() -> list[str]:
    missing = []
    for name in ("pytriton", "tritonclient", "tritonclient.grpc", "tritonclient.http"):
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


if _missing():
    if os.environ.get("NEMO_EXAONE_REQUIRE_SERVE") == "1":
        raise RuntimeError(f"serving tests need {', '.join(_missing())}: run them with the "
                           "interpreter scripts/setup_serve.sh prints (make test-serve)")
    collect_ignore_glob = ["test_*.py"]
