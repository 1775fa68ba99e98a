"""Demo time: how long a simulated "day", network call or piece of work lasts.

Every wait and every simulated duration in the demo goes through :func:`seconds` or
:func:`days`, scaled by ``DEMO_TIME_SCALE`` (an environment variable, default 1). It
is read once at import because waits are part of the workflow class definitions;
the smoke test sets it near zero so the whole demo runs in a few seconds.
"""

from __future__ import annotations

import os
from datetime import timedelta

#: Multiplies every duration in the demo (1 = as shown on the home page).
TIME_SCALE = float(os.environ.get("DEMO_TIME_SCALE", "1"))

#: One onboarding "day", in seconds, before scaling.
SECONDS_PER_DAY = 4.0


def seconds(n: float) -> float:
    """Return ``n`` demo seconds as real seconds."""
    return n * TIME_SCALE


def days(n: float) -> timedelta:
    """Return ``n`` demo days (a few seconds each) as a real duration."""
    return timedelta(seconds=n * SECONDS_PER_DAY * TIME_SCALE)
