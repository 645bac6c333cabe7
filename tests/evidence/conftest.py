"""The evidence leg (``make test-evidence``): the preference-optimization claims at full size.

About ten minutes on a 2-core CPU (a 3000-step SFT M0, then M0 -> M1 -> M2 with DPO and with
SimPO), so it is its own CI leg rather than part of the default run; collected only when
``NEMO_EXAONE_EVIDENCE=1`` (which the Makefile target sets). The small version of the same
claims runs in the main suite (tests/test_preference_evidence.py).
"""

from __future__ import annotations

import os

if os.environ.get("NEMO_EXAONE_EVIDENCE") != "1":
    collect_ignore_glob = ["test_*.py"]
